"""sql/008: Supabase Realtime's realtime.messages, send() and broadcast_changes() on plain PostgreSQL, the policies
that decide who joins, receives, sends and tracks on a session's topics, and the triggers that broadcast a lecture."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import errors

from attendance_kit import KitError, as_user, connect, migrate
from attendance_kit.connection import resolve_user
from attendance_kit.demo import ADA, ENGINES_LECTURE, GRACE, OLIVE, SAM, TESS

LECTURE = f"session:{ENGINES_LECTURE}:lecture"
STATUS = f"session:{ENGINES_LECTURE}:status"


def probe(conn: psycopg.Connection, who: str, topic: str, extension: str, action: str) -> bool:
    """Supabase Realtime's check, rolled back: for a read, a probe row inserted as the owner, then role, claims and
    `realtime.topic` set and the row selected back; for a write, the row inserted as the role."""
    role, claims = resolve_user(conn, who)
    with conn.transaction(force_rollback=True):
        probe_id = conn.execute("insert into realtime.messages (topic, extension) values (%s, %s) returning id",
                                [topic, extension]).fetchone()[0]
        conn.execute("select set_config('role', %s, true), set_config('realtime.topic', %s, true),"
                     " set_config('request.jwt.claims', %s, true)", [role, topic, json.dumps(claims)])
        if action == "read":
            return conn.execute("select count(*) from realtime.messages where id = %s", [probe_id]).fetchone()[0] == 1
        try:
            with conn.transaction():
                conn.execute("insert into realtime.messages (topic, extension) values (%s, %s)", [topic, extension])
        except errors.InsufficientPrivilege:
            return False
        return True


def messages(conn: psycopg.Connection) -> list[dict[str, Any]]:
    rows = conn.execute("select topic, event, extension, private, payload, id::text from realtime.messages"
                        " order by inserted_at, payload ->> 'operation'").fetchall()
    return [dict(zip(("topic", "event", "extension", "private", "payload", "id"), row, strict=True)) for row in rows]


def test_send_writes_a_private_broadcast_with_its_id_in_the_payload(conn: psycopg.Connection) -> None:
    with conn.transaction(force_rollback=True):
        conn.execute("delete from realtime.messages")
        conn.execute("""select realtime.send('{"value": 1}', 'greeting', 'room:1'),
                               realtime.send('{"id": "mine"}', 'greeting', 'room:2', false)""")
        first, second = sorted(messages(conn), key=lambda m: m["topic"])
        assert first == {"topic": "room:1", "event": "greeting", "extension": "broadcast", "private": True,
                         "payload": {"value": 1, "id": first["id"]}, "id": first["id"]}
        # A payload's own id is kept; the row gets another.
        assert (second["private"], second["payload"]) == (False, {"id": "mine"}) and second["id"] != "mine"
        assert conn.execute("select realtime.topic()").fetchone()[0] == "room:2"


def test_broadcast_changes_sends_what_supabase_sends_for_each_operation(conn: psycopg.Connection) -> None:
    with conn.transaction(force_rollback=True):
        conn.execute("""
            delete from realtime.messages;
            create table public.notes (id int primary key, body text);
            create function public.notes_broadcast() returns trigger language plpgsql as $$
            begin
                perform realtime.broadcast_changes('notes', tg_op, tg_op, tg_table_name, tg_table_schema, new, old,
                                                   tg_level);
                return null;
            end $$;
            create trigger notes_broadcast after insert or update or delete on public.notes
                for each row execute function public.notes_broadcast();
            insert into public.notes values (1, 'draft');
            update public.notes set body = 'final';
            delete from public.notes;
        """)
        sent = {m["event"]: m for m in messages(conn)}
        assert {m["topic"] for m in sent.values()} == {"notes"}
        assert all(m["private"] and m["extension"] == "broadcast" and m["payload"]["id"] == m["id"]
                   for m in sent.values())
        shape = {event: {k: v for k, v in m["payload"].items() if k != "id"} for event, m in sent.items()}
        common = {"table": "notes", "schema": "public"}
        assert shape == {
            "INSERT": {"operation": "INSERT", "record": {"id": 1, "body": "draft"}, "old_record": None, **common},
            "UPDATE": {"operation": "UPDATE", "record": {"id": 1, "body": "final"},
                       "old_record": {"id": 1, "body": "draft"}, **common},
            "DELETE": {"operation": "DELETE", "record": None, "old_record": {"id": 1, "body": "final"}, **common},
        }
        with pytest.raises(errors.RaiseException, match="Failed to process the row: function can only be triggered "
                                                        "for each row"):
            conn.execute("select realtime.broadcast_changes('notes', 'x', 'INSERT', 't', 's', null, null, 'STATEMENT')")


def test_send_refused_by_the_policies_warns_and_the_caller_goes_on(conn: psycopg.Connection) -> None:
    warnings: list[str] = []
    conn.add_notice_handler(lambda notice: warnings.append(notice.message_primary))
    with as_user(conn, SAM.id, rollback=True) as cur:
        cur.execute("select realtime.send('{}', 'fake', %s)", [LECTURE])
        assert cur.execute("select 1 as alive").fetchone() == {"alive": 1}
    assert warnings == ['WarnSendingBroadcastMessage: new row violates row-level security policy for table "messages"']
    assert conn.execute("select count(*) from realtime.messages where event = 'fake'").fetchone()[0] == 0


def test_a_students_check_in_reaches_the_teachers_lecture_topic(conn: psycopg.Connection) -> None:
    conn.execute("delete from realtime.messages")
    conn.commit()
    with as_user(conn, ADA.id) as cur:
        cur.execute("update live_sessions set status = 'live' where id = %s", [ENGINES_LECTURE])
    with as_user(conn, SAM.id) as cur:  # under Sam's RLS: he may not write the lecture topic, the trigger may
        cur.execute("insert into attendance_records (session_id, student_id) values (%s, %s)",
                    [ENGINES_LECTURE, SAM.id])
    sent = [(m["topic"], m["event"], m["payload"]["table"], m["payload"]["record"].get("status"))
            for m in messages(conn)]
    assert sent == [(LECTURE, "UPDATE", "live_sessions", "live"), (STATUS, "UPDATE", "live_sessions", "live"),
                    (LECTURE, "INSERT", "attendance_records", True), (LECTURE, "INSERT", "session_analytics", None)]
    check_in = messages(conn)[2]["payload"]
    assert (check_in["record"]["student_id"], check_in["old_record"]) == (SAM.id, None)


# Who may do what on Ada's lecture's topics (another session's topics are the same for its own people):
# (topic, extension, action) -> the personas allowed.
ALLOWED = {
    (LECTURE, "broadcast", "read"): {ADA},
    (LECTURE, "broadcast", "write"): {ADA},
    (LECTURE, "presence", "read"): {ADA, SAM, TESS},
    (LECTURE, "presence", "write"): {ADA, SAM, TESS},
    (STATUS, "broadcast", "read"): {ADA, SAM, TESS},
    (STATUS, "broadcast", "write"): {ADA},
    (STATUS, "presence", "read"): set(),
    (STATUS, "presence", "write"): set(),
}


def test_each_persona_joins_receives_sends_and_tracks_only_as_the_design_says(conn: psycopg.Connection) -> None:
    people = {ADA.id: ADA, GRACE.id: GRACE, SAM.id: SAM, TESS.id: TESS, OLIVE.id: OLIVE, "anon": "anon"}
    found = {cell: {people[who] for who in people if probe(conn, who, *cell)} for cell in ALLOWED}
    assert found == ALLOWED
    # Setting realtime.topic to one's own topic opens no other topic's rows.
    assert not probe(conn, ADA.id, f"session:{ENGINES_LECTURE}:other", "broadcast", "read")


def test_a_policy_that_raises_for_one_user_refuses_only_that_user(conn: psycopg.Connection) -> None:
    conn.execute(f"""
        create function public.fails_for_tess() returns boolean language plpgsql as $$
        begin
            if auth.uid() = '{TESS.id}' then raise exception 'broken policy'; end if;
            return true;
        end $$;
        grant execute on function public.fails_for_tess() to authenticated;
        create policy "Broken for Tess" on realtime.messages as restrictive for select to authenticated
            using ((select public.fails_for_tess()));
    """)
    conn.commit()
    with pytest.raises(errors.RaiseException, match="broken policy"):
        probe(conn, TESS.id, LECTURE, "presence", "read")
    assert probe(conn, SAM.id, LECTURE, "presence", "read")


def test_on_supabase_the_kit_creates_none_of_realtimes_objects(empty_db: str) -> None:
    with connect(empty_db) as conn:
        conn.execute("create schema realtime")  # Supabase's Postgres image, before Realtime first connects
        conn.commit()
        with pytest.raises(KitError, match=r"sql/008_realtime_broadcast.sql failed: realtime.messages does not exist "
                                           r"yet: this is a Supabase database .* then migrate again"):
            migrate(conn)
        conn.execute("""
            create table realtime.messages (topic text not null, extension text not null, payload jsonb, event text,
                private boolean default false, inserted_at timestamp not null default now(),
                id uuid not null default gen_random_uuid());
            alter table realtime.messages enable row level security;
            create function realtime.topic() returns text language sql stable as $$ select 'Supabase''s own' $$;
        """)
        conn.commit()
        migrate(conn)
        assert conn.execute("select realtime.topic()").fetchone()[0] == "Supabase's own"
        created = conn.execute("""
            select (select count(*) from pg_class where relnamespace = 'realtime'::regnamespace and relkind = 'r'),
                   (select count(*) from pg_proc where pronamespace = 'realtime'::regnamespace),
                   (select count(*) from pg_publication where pubname = 'supabase_realtime_messages_publication'),
                   (select count(*) from pg_policies where schemaname = 'realtime' and tablename = 'messages')
        """).fetchone()
        assert created == (1, 1, 0, 2)
