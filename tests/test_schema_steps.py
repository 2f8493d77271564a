"""The draft's steps 1–4 as the kit builds them: audits, analytics on delete and move, channels, the publication,
lints."""

from __future__ import annotations

import psycopg
import pytest

from attendance_kit import as_user
from attendance_kit.demo import ADA, COMPILERS_LECTURE, ENGINES_LECTURE, GRACE, OLIVE, SAM, TESS
from attendance_kit.lints import run_lints
from attendance_kit.paths import SQL_DIR

DENIED = psycopg.errors.InsufficientPrivilege


def newest_snapshot(conn: psycopg.Connection, session: str) -> tuple | None:
    return conn.execute("""
        select total_students, present_count, connection_count from session_analytics
        where session_id = %s order by recorded_at desc, id desc limit 1
    """, [session]).fetchone()


def counted(conn: psycopg.Connection, session: str) -> tuple:
    return conn.execute("""
        select count(*)::int, (count(*) filter (where status))::int,
               coalesce((select sum(active_connections)::int from websocket_channels where session_id = %s), 0)
        from attendance_records where session_id = %s
    """, [session, session]).fetchone()


def test_a_session_status_change_is_audited_automatically(conn: psycopg.Connection) -> None:
    with as_user(conn, ADA.email) as cur:
        cur.execute("select set_config('attendance_kit.change_reason', 'class starts', true)")
        cur.execute("update live_sessions set status = 'live' where id = %s", [ENGINES_LECTURE])
        cur.execute("update live_sessions set status = 'live' where id = %s", [ENGINES_LECTURE])  # no change, no entry
        history = cur.execute("select old_status, new_status, change_reason, changed_by::text as by "
                              "from session_status_changes").fetchall()
    assert history == [{"old_status": "scheduled", "new_status": "live", "change_reason": "class starts",
                        "by": ADA.id}]


def test_status_history_is_the_teachers_to_read(conn: psycopg.Connection) -> None:
    conn.execute("update live_sessions set status = 'live'")
    for who, expected in ((ADA.email, 1), (GRACE.email, 1), (SAM.email, 0), ("service_role", 2)):
        with as_user(conn, who) as cur:
            assert cur.execute("select count(*) as n from session_status_changes").fetchone()["n"] == expected, who


def test_attendance_changes_are_written_only_by_the_trigger(conn: psycopg.Connection) -> None:
    conn.execute("insert into attendance_records (session_id, student_id) values (%s, %s)", [ENGINES_LECTURE, SAM.id])
    attendance_id = conn.execute("select id from attendance_records").fetchone()[0]
    with pytest.raises(DENIED, match="permission denied"), as_user(conn, ADA.email) as cur:
        cur.execute("insert into attendance_status_changes (attendance_id, old_status, new_status) "
                    "values (%s, true, false)", [attendance_id])
    with as_user(conn, ADA.email) as cur:
        cur.execute("update attendance_records set status = false")
        cur.execute("update attendance_records set status = false")  # no change, no entry
    for who, expected in ((ADA.email, 1), (GRACE.email, 0), (SAM.email, 0)):
        with as_user(conn, who) as cur:
            assert cur.execute("select count(*) as n from attendance_status_changes").fetchone()["n"] == expected


def test_analytics_stay_right_on_delete_and_on_a_move(conn: psycopg.Connection) -> None:
    conn.execute("insert into websocket_channels (session_id, channel_name, active_connections) "
                 "values (%s, 'presence', 5)", [ENGINES_LECTURE])
    conn.execute("insert into attendance_records (session_id, student_id, status) values (%s, %s, true), "
                 "(%s, %s, false)", [ENGINES_LECTURE, SAM.id, ENGINES_LECTURE, TESS.id])
    assert newest_snapshot(conn, ENGINES_LECTURE) == counted(conn, ENGINES_LECTURE) == (2, 1, 5)

    conn.execute("delete from attendance_records where student_id = %s", [TESS.id])
    assert newest_snapshot(conn, ENGINES_LECTURE) == counted(conn, ENGINES_LECTURE) == (1, 1, 5)

    conn.execute("update attendance_records set session_id = %s", [COMPILERS_LECTURE])
    assert newest_snapshot(conn, ENGINES_LECTURE) == counted(conn, ENGINES_LECTURE) == (0, 0, 5)
    assert newest_snapshot(conn, COMPILERS_LECTURE) == counted(conn, COMPILERS_LECTURE) == (1, 1, 0)


def test_deleting_a_session_with_attendance_takes_its_rows_along(conn: psycopg.Connection) -> None:
    conn.execute("insert into attendance_records (session_id, student_id) values (%s, %s)", [ENGINES_LECTURE, SAM.id])
    conn.execute("delete from live_sessions where id = %s", [ENGINES_LECTURE])
    assert conn.execute("select count(*) from session_analytics").fetchone()[0] == 0


def test_the_sessions_teacher_manages_its_channels_and_its_students_read_them(conn: psycopg.Connection) -> None:
    with as_user(conn, ADA.email) as cur:
        cur.execute("insert into websocket_channels (session_id, channel_name) values (%s, 'presence')",
                    [ENGINES_LECTURE])
        assert cur.execute("update websocket_channels set active_connections = 3").rowcount == 1
    with pytest.raises(DENIED, match="row-level security"), as_user(conn, GRACE.email) as cur:
        cur.execute("insert into websocket_channels (session_id, channel_name) values (%s, 'chat')", [ENGINES_LECTURE])
    with pytest.raises(DENIED, match="row-level security"), as_user(conn, SAM.email) as cur:
        cur.execute("insert into websocket_channels (session_id, channel_name) values (%s, 'chat')", [ENGINES_LECTURE])
    for who, expected in ((ADA.email, 1), (SAM.email, 1), (OLIVE.email, 0), (GRACE.email, 0)):
        with as_user(conn, who) as cur:
            assert cur.execute("select count(*) as n from websocket_channels").fetchone()["n"] == expected, who
    for who in (GRACE.email, SAM.email):
        with as_user(conn, who) as cur:
            assert cur.execute("update websocket_channels set active_connections = 0").rowcount == 0
            assert cur.execute("delete from websocket_channels").rowcount == 0
    with as_user(conn, ADA.email) as cur:
        assert cur.execute("delete from websocket_channels").rowcount == 1


def test_trigger_functions_are_not_executable_through_the_api(conn: psycopg.Connection) -> None:
    rows = conn.execute("""
        select p.proname, p.prosecdef, p.proconfig, has_function_privilege('anon', p.oid, 'execute'),
               has_function_privilege('authenticated', p.oid, 'execute')
        from pg_proc p where p.pronamespace = 'public'::regnamespace order by p.proname
    """).fetchall()
    assert rows == [(name, True, ["search_path=\"\""], False, False) for name in (
        "record_attendance_status_change", "record_session_status_change", "update_session_analytics")]


def test_both_publications_carry_six_tables_and_reapply_cleanly(conn: psycopg.Connection) -> None:
    """The draft's publication, and supabase_realtime, which Supabase Realtime reads (the shim creates it empty)."""
    conn.execute((SQL_DIR / "006_realtime_publication.sql").read_text())
    for publication in ("live_attendance_pub", "supabase_realtime"):
        published = conn.execute("""
            select t.tablename, c.relreplident from pg_publication_tables t
            join pg_class c on c.oid = format('%%I.%%I', t.schemaname, t.tablename)::regclass
            where t.pubname = %s order by t.tablename
        """, [publication]).fetchall()
        assert published == [
            ("attendance_records", "d"), ("attendance_status_changes", "d"), ("live_sessions", "d"),
            ("session_analytics", "d"), ("session_status_changes", "d"), ("websocket_channels", "d"),
        ], publication


@pytest.mark.parametrize(("mutation", "lint", "obj"), [
    ("alter table public.session_analytics disable row level security", "rls_disabled_in_public",
     "session_analytics"),
    ("alter table public.websocket_channels disable row level security", "policy_exists_rls_disabled",
     "websocket_channels"),
    ("create function public.leaky() returns int language sql security definer set search_path = '' "
     "as 'select 1'", "security_definer_function_executable", "leaky()"),
    ("create function private.drifting() returns int language sql as 'select 1'",
     "function_search_path_mutable", "private.drifting()"),
    ("create policy per_row on public.session_analytics for select to authenticated "
     "using (auth.uid() is not null)", "auth_rls_initplan", "session_analytics policy per_row"),
    ("alter table public.session_analytics add column owner uuid references public.profiles (id)",
     "unindexed_foreign_keys", "session_analytics (session_analytics_owner_fkey)"),
    ("create policy another_read on public.websocket_channels for select to authenticated using (false)",
     "multiple_permissive_policies", "websocket_channels for authenticated SELECT"),
])
def test_each_lint_catches_its_problem(conn: psycopg.Connection, mutation: str, lint: str, obj: str) -> None:
    assert run_lints(conn) == []
    conn.execute(mutation)
    assert [(f.lint, f.object) for f in run_lints(conn) if f.lint == lint] == [(lint, obj)]


def test_a_sessions_groups_decide_who_reads_its_channels_as_they_change(conn: psycopg.Connection) -> None:
    conn.execute("insert into websocket_channels (session_id, channel_name) values (%s, 'presence')", [ENGINES_LECTURE])
    compilers_group = "60000000-0000-4000-8000-000000000002"

    def olive_sees() -> int:
        with as_user(conn, OLIVE.email) as cur:
            return cur.execute("select count(*) as n from websocket_channels").fetchone()["n"]

    assert olive_sees() == 0
    conn.execute("update live_sessions set group_ids = group_ids || %s::uuid where id = %s",
                 [compilers_group, ENGINES_LECTURE])
    assert olive_sees() == 1
    conn.execute("update live_sessions set group_ids = '{}' where id = %s", [ENGINES_LECTURE])
    assert olive_sees() == 0
    conn.execute("delete from live_sessions where id = %s", [ENGINES_LECTURE])
    assert conn.execute("select count(*) from private.session_groups where session_id = %s",
                        [ENGINES_LECTURE]).fetchone()[0] == 0
