"""The realtime client on a real server: the change feed's slot and its lifetime, pgoutput decoding, and delivery
under RLS."""

from __future__ import annotations

import base64
import json
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from attendance_kit import KitError, as_user, connect, load_demo_data, migrate
from attendance_kit.demo import ADA, COMPILERS_LECTURE, ENGINES_LECTURE, GRACE, OLIVE, PERSONAS, SAM, TESS, UMA
from attendance_kit.realtime import ChangeFeed, FeedLost, Realtime, listen, render_event
from attendance_kit.server import Cluster, port_is_free

EMAILS = tuple(persona.email for persona in PERSONAS)


def slots(conn: psycopg.Connection) -> list[tuple[str, bool]]:
    return conn.execute("select slot_name, temporary from pg_replication_slots "
                        "where slot_name like 'kit_realtime_%' and database = current_database()").fetchall()


def ready_slots(conn: psycopg.Connection) -> int:
    """Slots past their starting point (listed earlier, while they wait for running transactions to end)."""
    return conn.execute("select count(*) from pg_replication_slots where slot_name like 'kit_realtime_%' "
                        "and database = current_database() and confirmed_flush_lsn is not null").fetchone()[0]


def rows_of(events: list[dict[str, Any]], kinds: tuple[str, ...] = ("INSERT", "UPDATE")) -> set[tuple[str, str]]:
    return {(e["table"], str(e["record"]["id"])) for e in events if e["type"] in kinds and not e["errors"]}


def readable(conn: psycopg.Connection, who: str, changed: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Of the changed rows, those `who` can SELECT now: what RLS allows, asked the way an API request asks."""
    seen = set()
    for table in {t for t, _ in changed}:
        ids = [i for t, i in changed if t == table]
        try:
            with as_user(conn, who, rollback=True) as cur:
                cur.execute(f"select id::text as id from public.{table} where id = any(%s::uuid[])", [ids])
                seen |= {(table, row["id"]) for row in cur.fetchall()}
        except psycopg.errors.InsufficientPrivilege:  # no grant (anon): nothing
            pass
    return seen


def check_in(conn: psycopg.Connection, who: str, session: str) -> None:
    with as_user(conn, who) as cur:
        cur.execute("insert into attendance_records (session_id, student_id) values (%s, auth.uid())", [session])


def open_sessions(conn: psycopg.Connection) -> None:
    with as_user(conn, ADA.email) as cur:
        cur.execute("update live_sessions set status = 'live' where id = %s", [ENGINES_LECTURE])
    with as_user(conn, GRACE.email) as cur:
        cur.execute("update live_sessions set status = 'live' where id = %s", [COMPILERS_LECTURE])


# --- the slot never outlives its consumer ----------------------------------------------------------------------


def test_the_slot_is_temporary_and_gone_after_a_normal_exit_and_after_an_exception(
        conn: psycopg.Connection, db_url: str) -> None:
    with ChangeFeed(db_url) as feed:
        assert slots(conn) == [(feed.slot_name, True)]
    assert slots(conn) == []

    with pytest.raises(RuntimeError, match="consumer failed"), Realtime(db_url) as realtime:
        realtime.subscribe(ADA.email)
        assert len(slots(conn)) == 1
        raise RuntimeError("consumer failed")
    assert slots(conn) == []

    events = listen(ADA.email, database_url=db_url)
    assert slots(conn) == []  # a generator does nothing until iterated
    thread = threading.Thread(target=lambda: next(events, None))
    thread.start()
    # Creating a slot waits for the server's running transactions (other tests' too, on a shared server).
    deadline = time.monotonic() + 60
    while not slots(conn) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(slots(conn)) == 1
    # An event ends the next() above. The slot is listed while it still waits for its starting point on a busy
    # server, and changes committed before that point are not decoded, so keep making them until one arrives.
    deadline = time.monotonic() + 60
    while thread.is_alive() and time.monotonic() < deadline:
        open_sessions(conn)
        thread.join(0.5)
    assert not thread.is_alive()
    events.close()  # the consumer stops iterating: the generator's cleanup drops the slot
    assert slots(conn) == []


def test_a_consumer_killed_with_sigkill_leaves_no_slot(conn: psycopg.Connection, db_url: str) -> None:
    consumer = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from attendance_kit.realtime import Realtime\n"
         "realtime = Realtime(sys.argv[1])\n"
         "realtime.subscribe('ada@attendance-kit.test')\n"
         "print(realtime.feed.slot_name, flush=True)\n"
         "while True:\n"
         "    realtime.poll()\n"
         "    time.sleep(0.05)\n",
         db_url],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        slot = consumer.stdout.readline().strip()
        assert slot.startswith("kit_realtime_") and (slot, True) in slots(conn)
        os.kill(consumer.pid, signal.SIGKILL)
        consumer.wait(5)
        deadline = time.monotonic() + 30
        while slots(conn) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slots(conn) == []
    finally:
        consumer.kill()
        consumer.wait()


def test_a_clear_error_when_wal_level_is_not_logical(scratch_dir: Path) -> None:
    cluster = Cluster(scratch_dir / "state")
    url = cluster.up()
    try:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("alter system set wal_level = replica")
        cluster.down()
        deadline = time.monotonic() + 10
        while not port_is_free(cluster.port) and time.monotonic() < deadline:  # the old socket may linger
            time.sleep(0.1)
        cluster.up()
        with pytest.raises(KitError, match=r"wal_level is 'replica' but realtime needs 'logical'.*ALTER SYSTEM"):
            Realtime(url)
        with psycopg.connect(url) as check:
            assert check.execute("select count(*) from pg_replication_slots").fetchone()[0] == 0
    finally:
        cluster.down()


# --- what reaches whom ------------------------------------------------------------------------------------------


def test_only_published_tables_produce_events_and_a_dropped_table_stops(conn: psycopg.Connection, db_url: str) -> None:
    with Realtime(db_url) as realtime:
        everything = realtime.subscribe("service_role")
        conn.execute("update courses set title = title || '!'")  # courses is not published
        conn.execute("insert into websocket_channels (session_id, channel_name) values (%s, 'before')",
                     [ENGINES_LECTURE])
        events = realtime.poll()[everything]
        assert [(e["table"], e["type"], e["record"]["channel_name"]) for e in events] == [
            ("websocket_channels", "INSERT", "before")]

        conn.execute("alter publication live_attendance_pub drop table websocket_channels")
        conn.execute("insert into websocket_channels (session_id, channel_name) values (%s, 'after')",
                     [ENGINES_LECTURE])
        conn.execute("update live_sessions set title = title where id = %s", [ENGINES_LECTURE])
        assert [(e["table"], e["type"]) for e in realtime.poll()[everything]] == [("live_sessions", "UPDATE")]


@pytest.mark.parametrize("form", ["policy", "generic"])
def test_each_persona_receives_exactly_the_rows_rls_lets_it_select(
        conn: psycopg.Connection, db_url: str, form: str) -> None:
    if form == "generic":
        # A policy reading the whole row cannot be evaluated on a row held in an array (that row differs, here by
        # an extra key): authorisation must fall back to each subscriber's own SELECT. In the table the policy lets
        # every signed-in user read every row; evaluated on a row from the array it would deny them.
        for table in ("attendance_records", "live_sessions", "websocket_channels"):
            conn.execute(f"create policy whole_row on public.{table} for select to authenticated "
                         f"using (not (to_jsonb({table}) ? 'ordinality'))")
    # Two lanes for nine subscribers: the subscribers are split across two authorising connections.
    with Realtime(db_url, lanes=2, subscribers_per_lane=5) as realtime:
        subscribers = {who: realtime.subscribe(who) for who in (*EMAILS, "anon", "service_role")}
        open_sessions(conn)
        check_in(conn, SAM.email, ENGINES_LECTURE)
        check_in(conn, OLIVE.email, COMPILERS_LECTURE)
        with as_user(conn, ADA.email) as cur:
            cur.execute("insert into websocket_channels (session_id, channel_name) values (%s, 'presence')",
                        [ENGINES_LECTURE])
            cur.execute("update attendance_records set status = false where student_id = %s", [SAM.id])
        with as_user(conn, GRACE.email) as cur:
            cur.execute("insert into websocket_channels (session_id, channel_name) values (%s, 'chat')",
                        [COMPILERS_LECTURE])
        delivered = realtime.poll()
        assert len(realtime._delivery.lanes) == 2

    everything = delivered[subscribers["service_role"]]
    changed = rows_of(everything)
    assert {t for t, _ in changed} == {"live_sessions", "attendance_records", "websocket_channels",
                                      "session_status_changes", "session_analytics", "attendance_status_changes"}
    for who, subscriber in subscribers.items():
        assert rows_of(delivered.get(subscriber, [])) == readable(conn, who, changed), who
    # Spot checks of what that means: the outside student sees only their own side.
    assert rows_of(delivered[subscribers[OLIVE.email]]) <= {(t, i) for t, i in changed if t != "session_analytics"}
    assert len(rows_of(delivered[subscribers[ADA.email]])) > len(rows_of(delivered[subscribers[SAM.email]])) > 0
    # anon may not select the tables' keys: as on Supabase, every insert and update reaches it as an error alone.
    for_anon = delivered[subscribers["anon"]]
    assert len(for_anon) == len(everything) and all(
        (e["errors"], e["columns"], e["record"], e["commit_timestamp"]) == (["Error 401: Unauthorized"], [], {}, None)
        for e in for_anon)


def test_a_delete_goes_unchecked_with_its_key_alone_and_a_filter_on_another_column_never_matches_it(
        conn: psycopg.Connection, db_url: str) -> None:
    """Supabase Realtime's DELETE: no RLS check, filters on the logged old row, the key alone under RLS."""
    open_sessions(conn)
    check_in(conn, SAM.email, ENGINES_LECTURE)
    check_in(conn, TESS.email, ENGINES_LECTURE)
    in_ada_s_lecture = f"session_id=eq.{ENGINES_LECTURE}"
    with Realtime(db_url) as realtime:
        everyone = {who: realtime.subscribe(who, tables=["attendance_records"], event="DELETE")
                    for who in (*EMAILS, "anon")}
        olive_filtered = realtime.subscribe(OLIVE.email, tables=["attendance_records"], filter=in_ada_s_lecture)
        sam_id = conn.execute("delete from attendance_records where student_id = %s returning id::text",
                              [SAM.id]).fetchone()[0]
        default_identity = realtime.poll()
        # With the whole old row logged, the filter matches: Olive learns of a delete in a lecture not hers.
        conn.execute("alter table attendance_records replica identity full")
        tess_id = conn.execute("delete from attendance_records where student_id = %s returning id::text",
                               [TESS.id]).fetchone()[0]
        full_identity = realtime.poll()

    for who, subscriber in everyone.items():
        (event,) = default_identity[subscriber]
        assert event["type"] == "DELETE" and "record" not in event
        # The key, to every subscriber of the table (anon may not select it: an empty old_record).
        assert {k: str(v) for k, v in event["old_record"].items()} == ({} if who == "anon" else {"id": sam_id}), who
    assert olive_filtered not in default_identity
    (leak,) = full_identity[olive_filtered]
    assert {k: str(v) for k, v in leak["old_record"].items()} == {"id": tess_id}  # RLS on: the key alone


def test_delivery_time_rls_a_row_gone_before_delivery_is_not_sent_and_truncate_reaches_nobody(
        conn: psycopg.Connection, db_url: str) -> None:
    open_sessions(conn)
    with Realtime(db_url) as realtime:
        sam = realtime.subscribe(SAM.email, tables=["attendance_records"])
        ada = realtime.subscribe(ADA.email, tables=["websocket_channels"])
        anon = realtime.subscribe("anon", tables=["websocket_channels"])
        check_in(conn, SAM.email, ENGINES_LECTURE)
        conn.execute("delete from attendance_records")
        conn.execute("insert into websocket_channels (session_id, channel_name) values (%s, 'x')", [ENGINES_LECTURE])
        conn.execute("truncate websocket_channels")
        delivered = realtime.poll()
    # As in Supabase, RLS is asked when the change is delivered: the inserted row no longer exists then.
    assert [e["type"] for e in delivered[sam]] == ["DELETE"]
    assert ada not in delivered  # the inserted channel is gone, and a TRUNCATE is never delivered
    assert [(e["type"], e["errors"]) for e in delivered[anon]] == [("INSERT", ["Error 401: Unauthorized"])]


def test_which_policies_apply_to_a_role_follows_postgresql(conn: psycopg.Connection, db_url: str) -> None:
    # To PUBLIC: applies. To a role `authenticated` is a member of but, being NOINHERIT, has no privileges of:
    # does not. To an unrelated role: does not.
    member, other = f"kit_member_{secrets.token_hex(3)}", f"kit_other_{secrets.token_hex(3)}"
    conn.execute(f"create role {member} nologin; create role {other} nologin; grant {member} to authenticated")
    try:
        conn.execute(f"""
            create policy to_public on websocket_channels for select using (channel_name = 'open');
            create policy to_member on websocket_channels for select to {member} using (true);
            create policy to_other on websocket_channels for select to {other} using (true)""")
        with Realtime(db_url) as realtime:
            olive = realtime.subscribe(OLIVE.email, tables=["websocket_channels"])
            conn.execute("insert into websocket_channels (session_id, channel_name) values (%s, 'open'), "
                         "(%s, 'closed')", [ENGINES_LECTURE, ENGINES_LECTURE])
            delivered = realtime.poll()
        assert [e["record"]["channel_name"] for e in delivered[olive]] == ["open"]
        every = {("websocket_channels", str(i)) for (i,) in conn.execute("select id from websocket_channels")}
        assert rows_of(delivered[olive]) == readable(conn, OLIVE.email, every)
    finally:
        conn.execute(f"drop policy if exists to_member on websocket_channels; "
                     f"drop policy if exists to_other on websocket_channels; drop role {member}; drop role {other}")


def test_a_two_column_primary_key_is_checked_in_both_forms(conn: psycopg.Connection, db_url: str) -> None:
    conn.execute("""
        create table public.realtime_pairs (a int, b text, note text, primary key (a, b));
        alter table public.realtime_pairs replica identity full;
        alter publication live_attendance_pub add table public.realtime_pairs;
        alter table public.realtime_pairs enable row level security;
        create policy positive on public.realtime_pairs for select to authenticated using (a > 0);
        grant select on public.realtime_pairs to authenticated;
    """)
    received = []
    for form in ("policy", "generic"):
        if form == "generic":  # see test_each_persona_receives_exactly_the_rows_rls_lets_it_select
            conn.execute("create policy whole_row on public.realtime_pairs for select to authenticated "
                         "using (to_jsonb(realtime_pairs) ? 'ordinality')")
        with Realtime(db_url) as realtime:
            sam = realtime.subscribe(SAM.email, tables=["realtime_pairs"])
            conn.execute("insert into realtime_pairs values (1, 'x', 'seen'), (-1, 'x', 'hidden'), (2, 'y', 'seen')")
            events = realtime.poll()[sam]
            conn.execute("delete from realtime_pairs")
            events += realtime.poll()[sam]
            received.append([(e["type"], e.get("record", e.get("old_record"))) for e in events])
    inserts = [("INSERT", {"a": 1, "b": "x", "note": "seen"}), ("INSERT", {"a": 2, "b": "y", "note": "seen"})]
    # Deletes are not checked; under RLS their old_record is the key alone, though the whole row was logged.
    deletes = [("DELETE", {"a": 1, "b": "x"}), ("DELETE", {"a": -1, "b": "x"}), ("DELETE", {"a": 2, "b": "y"})]
    assert received == [inserts + deletes] * 2


def test_an_update_is_checked_on_its_new_row_and_its_old_record_is_what_the_replica_identity_logged(
        conn: psycopg.Connection, db_url: str) -> None:
    conn.execute("insert into attendance_records (session_id, student_id) values (%s, %s)", [ENGINES_LECTURE, OLIVE.id])
    with Realtime(db_url) as realtime:
        subscribers = {who: realtime.subscribe(who, tables=["attendance_records"])
                       for who in (ADA.email, GRACE.email, OLIVE.email)}
        move = "update attendance_records set session_id = %s, status = %s where student_id = %s"
        conn.execute(move, [COMPILERS_LECTURE, False, OLIVE.id])
        default_identity = realtime.poll()
        conn.execute("alter table attendance_records replica identity full")
        conn.execute(move, [ENGINES_LECTURE, True, OLIVE.id])
        full_identity = realtime.poll()
    assert subscribers[ADA.email] not in default_identity  # the row is no longer in her session
    for who in (GRACE.email, OLIVE.email):
        (event,) = default_identity[subscribers[who]]
        assert event["record"]["status"] is False and set(event["old_record"]) == {"id"}
    # The whole old row, to whoever may read the new one: Ada, not Grace, is told where the row came from.
    assert subscribers[GRACE.email] not in full_identity
    (event,) = full_identity[subscribers[ADA.email]]
    assert str(event["old_record"]["session_id"]) == COMPILERS_LECTURE and event["old_record"]["status"] is False


def test_subscriptions_filter_by_table_event_and_column(conn: psycopg.Connection, db_url: str) -> None:
    open_sessions(conn)
    with Realtime(db_url) as realtime:
        ada = realtime.subscribe(ADA.email, tables=["attendance_records"], event="INSERT",
                                 filter=f"session_id=eq.{ENGINES_LECTURE}")
        grace = realtime.subscribe(GRACE.email, tables=["attendance_records"],
                                   filter=f"session_id=in.({COMPILERS_LECTURE},{ENGINES_LECTURE})")
        service = realtime.subscribe("service_role", tables=["attendance_records"],
                                     filter=f"session_id=neq.{ENGINES_LECTURE}")
        # Refused subscriptions, some refused by the server (a value that does not cast): the realtime client goes on.
        for bad, message in ((dict(filter="session_id=foo.x"), r'params: \["foo", "x"\]: write column='),
                             (dict(filter=f"nope=eq.{ENGINES_LECTURE}"), "invalid column for filter nope"),
                             (dict(filter="session_id=eq.not-a-uuid"), "invalid input syntax for type uuid"),
                             (dict(filter="status=eq.true", tables=None), "exactly one table"),
                             (dict(event="UPSERT"), "unknown event"),
                             (dict(event="TRUNCATE"), "never delivers TRUNCATE"),
                             (dict(tables=["courses"]), "not in publication")):
            with pytest.raises(KitError, match=message):
                realtime.subscribe(ADA.email, **{"tables": ["attendance_records"], **bad})
        check_in(conn, SAM.email, ENGINES_LECTURE)
        check_in(conn, OLIVE.email, COMPILERS_LECTURE)
        conn.execute("update attendance_records set status = false")
        delivered = realtime.poll()
    assert [(e["type"], str(e["record"]["student_id"])) for e in delivered[ada]] == [("INSERT", SAM.id)]
    assert [(e["type"], str(e["record"]["student_id"])) for e in delivered[grace]] == [
        ("INSERT", OLIVE.id), ("UPDATE", OLIVE.id)]  # RLS still applies: Sam is not her student
    assert [(e["type"], str(e["record"]["student_id"])) for e in delivered[service]] == [
        ("INSERT", OLIVE.id), ("UPDATE", OLIVE.id)]


def test_an_unsubscribed_subscriber_receives_nothing_after(conn: psycopg.Connection, db_url: str) -> None:
    open_sessions(conn)
    with Realtime(db_url) as realtime:
        ada = realtime.subscribe(ADA.email, tables=["attendance_records"])
        service = realtime.subscribe("service_role", tables=["attendance_records"])
        check_in(conn, SAM.email, ENGINES_LECTURE)
        before = realtime.poll()
        realtime.unsubscribe(ada)
        check_in(conn, TESS.email, ENGINES_LECTURE)
        after = realtime.poll()
        realtime.unsubscribe(service)
        check_in(conn, UMA.email, ENGINES_LECTURE)
        after_everyone = realtime.poll()
        assert realtime.subscribers == [] and realtime.last_poll_changes > 0  # the change was read, for nobody
    assert [str(e["record"]["student_id"]) for e in before[ada]] == [SAM.id]
    assert [str(e["record"]["student_id"]) for e in before[service]] == [SAM.id]
    assert ada not in after and [str(e["record"]["student_id"]) for e in after[service]] == [TESS.id]
    assert after_everyone == {}


def test_a_lost_slot_is_feed_lost_and_reconnect_keeps_the_subscribers_while_another_connection_is_reopened(
        conn: psycopg.Connection, db_url: str) -> None:
    open_sessions(conn)
    with Realtime(db_url) as realtime:
        ada = realtime.subscribe(ADA.email, tables=["attendance_records"])
        conn.execute("select pg_terminate_backend(%s, 5000)",
                     [realtime.conn.info.backend_pid])  # not the slot's: opened again before the next poll
        check_in(conn, SAM.email, ENGINES_LECTURE)
        first = realtime.poll()
        conn.execute("select pg_terminate_backend(%s, 5000)", [realtime.feed.conn.info.backend_pid])
        check_in(conn, TESS.email, ENGINES_LECTURE)  # committed while no slot exists: lost, as in Supabase
        with pytest.raises(FeedLost, match=r"lost the change feed's connection .*: changes committed until the "
                                           r"feed reconnects are not delivered"):
            realtime.poll()
        realtime.reconnect()
        check_in(conn, UMA.email, ENGINES_LECTURE)
        second = realtime.poll()
    assert [str(e["record"]["student_id"]) for e in first[ada]] == [SAM.id]
    assert [str(e["record"]["student_id"]) for e in second[ada]] == [UMA.id]


def test_a_connection_lost_while_authorising_a_batch_costs_nothing_while_the_slot_stands(
        conn: psycopg.Connection, db_url: str) -> None:
    """A policy that ends its own connection, once, in the middle of the authorisation: the batch is authorised
    again on a new connection, from the same slot."""
    conn.execute("""
        create sequence public.calls;
        create function public.ends_its_connection_once() returns boolean
        language sql volatile security definer set search_path = '' as $$
            select case when nextval('public.calls') = 1 then pg_terminate_backend(pg_backend_pid()) else true end
        $$;
        create policy "ends its connection once" on public.attendance_records as restrictive for select
        to authenticated using (public.ends_its_connection_once());
    """)
    open_sessions(conn)
    with Realtime(db_url) as realtime:
        ada = realtime.subscribe(ADA.email, tables=["attendance_records"])
        slot_backend = realtime.feed.conn.info.backend_pid
        check_in(conn, SAM.email, ENGINES_LECTURE)
        delivered = realtime.poll()
        assert realtime.feed.conn.info.backend_pid == slot_backend  # the same slot
    assert [str(e["record"]["student_id"]) for e in delivered[ada]] == [SAM.id]
    assert conn.execute("select last_value from public.calls").fetchone()[0] >= 2


def test_connections_past_file_descriptor_1024_are_watched_as_the_rest(conn: psycopg.Connection,
                                                                       db_url: str) -> None:
    """A gateway with thousands of sockets holds descriptors past select()'s FD_SETSIZE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"this machine allows {hard} open files; the test needs 1,200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        open_sessions(conn)
        with Realtime(db_url) as realtime:
            ada = realtime.subscribe(ADA.email, tables=["attendance_records"])
            assert realtime.conn.fileno() > 1024
            check_in(conn, SAM.email, ENGINES_LECTURE)
            delivered = realtime.poll()
    finally:
        for descriptor in fillers:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert [str(e["record"]["student_id"]) for e in delivered[ada]] == [SAM.id]


def test_a_policy_failing_for_one_subscriber_costs_that_subscriber_alone_and_delivery_goes_on(
        conn: psycopg.Connection, db_url: str) -> None:
    # An error on a connection drops its temporary slots: the slot's own connection must never meet one.
    conn.execute("create policy fails_for_olive on public.websocket_channels as restrictive for select "
                 f"to authenticated using ((select auth.uid()) <> '{OLIVE.id}' "
                 "or 1 / (length(channel_name) - length(channel_name)) = 1)")  # divides by zero, for Olive
    with Realtime(db_url) as realtime:
        ada, olive = (realtime.subscribe(who, tables=["websocket_channels"]) for who in (ADA.email, OLIVE.email))
        names = []
        for name in ("one", "two"):
            conn.execute("insert into websocket_channels (session_id, channel_name) values (%s, %s)",
                         [ENGINES_LECTURE, name])
            delivered = realtime.poll()
            assert olive not in delivered
            names += [e["record"]["channel_name"] for e in delivered[ada]]
    assert names == ["one", "two"]


def test_a_policy_changed_between_polls_is_obeyed_at_once(conn: psycopg.Connection, db_url: str) -> None:
    open_sessions(conn)
    with Realtime(db_url) as realtime:
        ada = realtime.subscribe(ADA.email, tables=["attendance_records"])
        check_in(conn, SAM.email, ENGINES_LECTURE)
        assert len(realtime.poll()[ada]) == 1
        conn.execute("create policy present_only on public.attendance_records as restrictive for select "
                     "to authenticated using (status)")
        conn.execute("insert into attendance_records (session_id, student_id, status) values (%s, %s, false), "
                     "(%s, %s, true)", [ENGINES_LECTURE, TESS.id, ENGINES_LECTURE, UMA.id])
        events = realtime.poll()[ada]
    assert [e["record"]["status"] for e in events] == [True]
    assert readable(conn, ADA.email, rows_of(events)) == rows_of(events)


def test_the_policy_form_takes_every_value_its_table_takes(conn: psycopg.Connection, db_url: str) -> None:
    """The rows a poll asks about are copied into a table of their own: a value too large for an index, an array
    of a type without comparison, a NOT NULL dropped since: each delivered as RLS decides, and the feed goes on."""
    conn.execute("""
        create table public.notes (id int primary key, owner uuid not null, body text not null, tags json[]);
        alter table public.notes enable row level security;
        create policy "owners read their notes" on public.notes for select to authenticated
            using (owner = (select auth.uid()) and coalesce(body, '') <> 'secret' and cardinality(tags) < 3);
        grant select on public.notes to authenticated;
        alter publication live_attendance_pub add table public.notes;
    """)
    large = base64.b64encode(os.urandom(6000)).decode()  # incompressible: past a btree entry's 2,704 bytes
    with Realtime(db_url) as realtime:
        ada, sam = (realtime.subscribe(who, tables=["notes"]) for who in (ADA.email, SAM.email))
        conn.execute("insert into public.notes values (1, %s, %s, array['{}'::json]), "
                     "(2, %s, 'hi', array['1'::json, '2'::json]), (3, %s, 'secret', array[]::json[])",
                     [ADA.id, large, SAM.id, ADA.id])
        first = realtime.poll()
        conn.execute("alter table public.notes alter column body drop not null")
        conn.execute("insert into public.notes values (4, %s, null, array[]::json[])", [ADA.id])
        second = realtime.poll()
    assert [e["record"]["id"] for e in first[ada]] == [1] and first[ada][0]["record"]["body"] == large
    assert [e["record"]["id"] for e in first[sam]] == [2]
    assert [e["record"]["id"] for e in second[ada]] == [4] and second.get(sam, []) == []


# --- order, completeness, values -------------------------------------------------------------------------------


def test_events_come_in_commit_order_and_in_order_within_a_transaction(
        conn: psycopg.Connection, db_url: str) -> None:
    def channel(c: psycopg.Connection, name: str) -> None:
        c.execute("insert into websocket_channels (session_id, channel_name) values (%s, %s)", [ENGINES_LECTURE, name])

    with Realtime(db_url) as realtime, psycopg.connect(db_url, autocommit=True) as other:
        ada = realtime.subscribe(ADA.email, tables=["websocket_channels"])
        with conn.transaction():
            channel(conn, "first-begun-1")
            with other.transaction():
                channel(other, "second-begun-1")
                channel(other, "second-begun-2")
            channel(conn, "first-begun-2")
        names = [e["record"]["channel_name"] for e in realtime.poll()[ada]]
        channel(conn, "next-poll")
        names += [e["record"]["channel_name"] for e in realtime.poll()[ada]]
    assert names == ["second-begun-1", "second-begun-2", "first-begun-1", "first-begun-2", "next-poll"]


def test_nothing_is_lost_or_duplicated_across_polls_and_large_transactions(
        conn: psycopg.Connection, db_url: str) -> None:
    inserted: list[str] = []

    def channels(count: int) -> None:
        names = [f"c{len(inserted) + i}" for i in range(count)]
        conn.execute("insert into websocket_channels (session_id, channel_name) select %s, unnest(%s::text[])",
                     [ENGINES_LECTURE, names])
        inserted.extend(names)

    received: list[str] = []
    # A poll stops after ~50 messages, but only between transactions: a large one still arrives whole.
    with Realtime(db_url, max_messages=50) as realtime:
        ada = realtime.subscribe(ADA.email, tables=["websocket_channels"])
        for size in (1, 3000, 7, 120, 2500):
            channels(size)
            if size > 100:
                channels(2)  # a small transaction right behind a large one
            for _ in range(3):
                received += [e["record"]["channel_name"] for e in realtime.poll().get(ada, [])]
        while realtime.poll() or realtime.last_poll_changes:
            pass
    assert len(inserted) == 5634 and received == inserted


def test_values_round_trip_as_psycopg_would_select_them(conn: psycopg.Connection, db_url: str) -> None:
    conn.execute("""
        create table public.realtime_types (
            id uuid primary key default gen_random_uuid(), at timestamptz, doc jsonb, flag boolean, n integer,
            label text, ids uuid[], big text);
        alter publication live_attendance_pub add table public.realtime_types;
        alter table public.realtime_types enable row level security;
        create policy readable on public.realtime_types for select to authenticated using (true);
        grant select on public.realtime_types to authenticated;
    """)
    big = secrets.token_hex(40_000)  # incompressible: stored out of line (TOAST)
    with Realtime(db_url) as realtime:
        sam = realtime.subscribe(SAM.email, tables=["realtime_types"])
        conn.execute("""
            insert into realtime_types (at, doc, flag, n, label, ids, big) values
            ('2026-01-12 09:00:00.123456+00', '{"a": [1, 2.5, null, "é"], "b": {"c": true}}', true, -7,
             'tab\tquote" back\\ comma, unicode ✓', array[gen_random_uuid(), gen_random_uuid()], %s),
            (null, null, null, null, null, null, null)
        """, [big])
        inserted = [e["record"] for e in realtime.poll()[sam]]
        conn.execute("update realtime_types set flag = false where big is not null")  # big is left unchanged
        (default_identity,) = realtime.poll()[sam]
        conn.execute("alter table realtime_types replica identity full")
        conn.execute("update realtime_types set flag = true where big is not null")
        (full_identity,) = realtime.poll()[sam]
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        selected = cur.execute("select * from realtime_types order by big is null").fetchall()
    assert inserted == selected
    assert inserted[0]["doc"] == {"a": [1, 2.5, None, "é"], "b": {"c": True}}
    assert inserted[0]["at"] == datetime(2026, 1, 12, 9, 0, 0, 123456, tzinfo=UTC)
    # An unchanged TOASTed value is not in the WAL: Supabase leaves it out; the logged old row supplies it.
    assert "big" not in default_identity["record"] and default_identity["record"]["flag"] is False
    assert set(default_identity["old_record"]) == {"id"}
    assert full_identity["record"]["big"] == big and full_identity["old_record"]["flag"] is False
    assert [c["type"] for c in full_identity["columns"]] == ["uuid", "timestamptz", "jsonb", "bool", "int4", "text",
                                                           "_uuid", "text"]


def test_over_supabase_s_size_limit_an_event_carries_error_413_and_only_its_short_values(
        conn: psycopg.Connection, db_url: str) -> None:
    conn.execute("""
        create table public.realtime_sizes (id int primary key, note text, big text);
        alter publication live_attendance_pub add table public.realtime_sizes;
        alter table public.realtime_sizes enable row level security;
        create policy readable on public.realtime_sizes for select to authenticated using (true);
        grant select on public.realtime_sizes to authenticated;
    """)
    under, over = "a" * 900_000, "b" * 1_100_000  # Supabase's limit: 1 MB of wal2json message
    with Realtime(db_url) as realtime:
        sam = realtime.subscribe(SAM.email, tables=["realtime_sizes"])
        conn.execute("insert into realtime_sizes values (1, 'fits', %s), (2, 'too large', %s)", [under, over])
        fits, too_large = realtime.poll()[sam]
    assert fits["errors"] is None and fits["record"] == {"id": 1, "note": "fits", "big": under}
    assert too_large["errors"] == ["Error 413: Payload Too Large"]
    assert too_large["record"] == {"id": 2, "note": "too large"}  # values of at most 64 bytes of JSON
    assert [c["name"] for c in too_large["columns"]] == ["id", "note", "big"]


def test_without_rls_a_change_is_delivered_without_looking_the_row_up(conn: psycopg.Connection, db_url: str) -> None:
    conn.execute("""
        create table public.realtime_open (id int primary key, note text);
        alter publication live_attendance_pub add table public.realtime_open;
        grant select on public.realtime_open to authenticated;
    """)
    with Realtime(db_url) as realtime:
        sam = realtime.subscribe(SAM.email, tables=["realtime_open"])
        conn.execute("insert into realtime_open values (1, 'gone before the poll')")
        conn.execute("delete from realtime_open")
        events = realtime.poll()[sam]
    # Supabase looks a row up only where RLS is enabled: the insert arrives though the row is gone.
    assert [(e["type"], e.get("record", e.get("old_record"))) for e in events] == [
        ("INSERT", {"id": 1, "note": "gone before the poll"}), ("DELETE", {"id": 1})]


def test_a_value_python_has_no_type_for_arrives_as_its_text(conn: psycopg.Connection, db_url: str) -> None:
    with Realtime(db_url) as realtime:
        ada = realtime.subscribe(ADA.email, tables=["live_sessions"])
        conn.execute("update live_sessions set ends_at = 'infinity' where id = %s", [ENGINES_LECTURE])
        (event,) = realtime.poll()[ada]
        conn.execute("update live_sessions set ends_at = null where id = %s", [ENGINES_LECTURE])
        (after,) = realtime.poll()[ada]  # and delivery goes on
    assert event["record"]["ends_at"] == "infinity" and after["record"]["ends_at"] is None


def test_type_and_origin_messages_are_read_past(conn: psycopg.Connection, db_url: str) -> None:
    # A user-defined type makes pgoutput send a Type message before the Relation; a transaction replayed
    # under a replication origin adds an Origin message. Enum values load as text, a domain as its base type.
    conn.execute("""
        create type public.mood as enum ('calm', 'busy');
        create domain public.positive as int check (value > 0);
        create table public.realtime_moods (id int primary key, mood public.mood, score public.positive);
        alter publication live_attendance_pub add table public.realtime_moods;
    """)
    origin = f"kit_test_{secrets.token_hex(3)}"
    conn.execute("select pg_replication_origin_create(%s)", [origin])
    try:
        with Realtime(db_url) as realtime:
            everything = realtime.subscribe("service_role", tables=["realtime_moods"])
            with psycopg.connect(db_url, autocommit=True) as replayer:
                replayer.execute("select pg_replication_origin_session_setup(%s)", [origin])
                replayer.execute("insert into realtime_moods values (1, 'busy', 7)")
                replayer.execute("select pg_replication_origin_session_reset()")
            feed = realtime.feed
            raw = feed.conn.execute("select get_byte(data, 0) from pg_logical_slot_peek_binary_changes(%s, null, "
                                    "null, 'proto_version', '1', 'publication_names', %s)",
                                    [feed.slot_name, "live_attendance_pub"]).fetchall()
            (event,) = realtime.poll()[everything]
    finally:
        conn.execute("select pg_replication_origin_drop(%s)", [origin])
    assert {chr(b) for (b,) in raw} >= {"B", "O", "Y", "R", "I", "C"}
    assert event["record"] == {"id": 1, "mood": "busy", "score": 7}
    assert [c["type"] for c in event["columns"]] == ["int4", "mood", "positive"]


def test_listen_shows_the_teacher_a_check_in_and_the_outsider_nothing(
        conn: psycopg.Connection, db_url: str) -> None:
    open_sessions(conn)
    seen: dict[str, list[dict[str, Any]]] = {ADA.email: [], OLIVE.email: []}

    def run(who: str) -> None:
        seen[who].extend(listen(who, database_url=db_url, tables=["attendance_records"], seconds=3))

    threads = [threading.Thread(target=run, args=(who,)) for who in seen]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while ready_slots(conn) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready_slots(conn) == 2  # both listening before the check-in commits
    check_in(conn, SAM.email, ENGINES_LECTURE)
    for thread in threads:
        thread.join(60)
    assert slots(conn) == []  # --seconds ended both cleanly
    (event,) = seen[ADA.email]
    assert (event["type"], str(event["record"]["student_id"])) == ("INSERT", SAM.id)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["commit_timestamp"])
    assert seen[OLIVE.email] == []
    line = json.loads(render_event(event, "jsonl"))
    assert line["record"]["student_id"] == SAM.id and line["table"] == "attendance_records"
    assert "INSERT" in render_event(event, "table") and SAM.id in render_event(event, "table")


def test_an_idle_listener_writes_nothing_to_the_server_log(scratch_dir: Path) -> None:
    """Logical decoding logs two LOG lines (and their statement) per call: polled several times a second, an idle
    listener once wrote ~600 MB a day into the cluster's log. Now none; the log itself rotates by the hour."""
    cluster = Cluster(scratch_dir / "quiet")
    url = cluster.up()
    try:
        with connect(url) as conn:
            migrate(conn)
            load_demo_data(conn)
        assert list(listen(ADA.email, database_url=url, seconds=1.5)) == []
        logs = sorted((cluster.data_dir / "log").glob("*.log"))
        assert logs and all(re.fullmatch(r"server-\d\d\.log", log.name) for log in logs)
        assert "logical decoding" not in "".join(log.read_text(errors="replace") for log in logs)
    finally:
        cluster.down()
