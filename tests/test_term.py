"""The demo term: deterministic, written through the real policies and triggers, consistent with the tables."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import psycopg

from attendance_kit import connect, load_demo_data, load_demo_term, migrate, query_as
from attendance_kit.demo import SAM
from attendance_kit.term import TERM_START, TermSize

SMALL = TermSize(weeks=2, group_size=8)


def term_db(url: str) -> psycopg.Connection:
    conn = connect(url)
    migrate(conn)
    load_demo_data(conn)
    assert load_demo_term(conn, SMALL) is True
    return conn


def fingerprint(conn: psycopg.Connection) -> tuple:
    """Everything the term wrote, except the random ids of rows nobody names."""
    return tuple(conn.execute(query).fetchall() for query in (
        "select session_id, student_id, status, checked_in_at from attendance_records order by session_id, student_id",
        "select session_id, total_students, present_count, connection_count, recorded_at "
        "from session_analytics order by session_id, recorded_at",
        "select ar.student_id, c.old_status, c.new_status, c.change_reason, c.changed_by, c.changed_at "
        "from attendance_status_changes c join attendance_records ar on ar.id = c.attendance_id "
        "order by c.changed_at, ar.student_id",
        "select session_id, old_status, new_status, change_reason, changed_by, changed_at "
        "from session_status_changes order by changed_at, session_id",
    ))


def test_the_same_seed_gives_the_same_term(server) -> None:
    with term_db(server.fresh_database(migrated=False)) as first, \
            term_db(server.fresh_database(migrated=False)) as second:
        assert fingerprint(first) == fingerprint(second)
        assert load_demo_term(first, SMALL) is False


def test_the_term_is_written_by_the_kits_triggers_at_session_time(server) -> None:
    with term_db(server.fresh_database(migrated=False)) as conn:
        sessions = conn.execute("select count(*) from live_sessions where status = 'ended'").fetchone()[0]
        assert sessions == 2 * 3
        # Each session's newest snapshot is its attendance, counted directly.
        mismatched = conn.execute("""
            select ls.title from live_sessions ls
            cross join lateral (select total_students, present_count from session_analytics sa
                                where sa.session_id = ls.id order by recorded_at desc, id desc limit 1) newest
            where ls.status = 'ended'
              and (newest.total_students, newest.present_count) <> (
                  select count(*), count(*) filter (where status) from attendance_records where session_id = ls.id)
        """).fetchall()
        assert mismatched == []
        # Check-ins, snapshots and audits carry the sessions' own times, not the time the term was generated.
        first, last = conn.execute("""
            select min(checked_in_at), max(checked_in_at) from attendance_records ar
            join live_sessions ls on ls.id = ar.session_id where ls.status = 'ended'
        """).fetchone()
        assert TERM_START - timedelta(minutes=11) <= first
        assert last <= TERM_START + timedelta(days=7, hours=6)
        reasons = {r[0] for r in conn.execute("select distinct change_reason from attendance_status_changes")}
        assert reasons and None not in reasons
        teachers = {r[0] for r in conn.execute("""
            select distinct p.role from attendance_status_changes c join profiles p on p.id = c.changed_by""")}
        assert teachers == {"teacher"}


def test_a_teacher_queries_only_their_sessions_and_the_numbers_add_up(server) -> None:
    with term_db(server.fresh_database(migrated=False)) as conn:
        rate = """
            select ls.title, count(*) filter (where ar.status) as present, count(*) as recorded
            from live_sessions ls join attendance_records ar on ar.session_id = ls.id
            where ls.status = 'ended' group by ls.id order by ls.starts_at
        """
        ada = query_as(conn, "ada@attendance-kit.test", rate)
        assert list(ada["title"]) == ["Analytical Engines: lecture 2", "Analytical Engines: lecture 3"]
        direct = conn.execute("""
            select count(*) filter (where ar.status), count(*) from attendance_records ar
            join live_sessions ls on ls.id = ar.session_id
            where ls.title = 'Analytical Engines: lecture 2'
        """).fetchone()
        assert (ada.loc[0, "present"], ada.loc[0, "recorded"]) == direct
        everyone = query_as(conn, "service_role", rate)
        assert len(everyone) == 6
        sam = query_as(conn, "service_role", """
            select count(*) filter (where status) as present, count(*) as sessions from attendance_records
            where student_id = %s
        """, [SAM.id])
        assert sam.loc[0, "sessions"] == 2


def test_an_interrupted_term_is_completed_by_running_it_again(server) -> None:
    with term_db(server.fresh_database(migrated=False)) as whole, \
            connect(server.fresh_database(migrated=False)) as resumed:
        migrate(resumed)
        load_demo_data(resumed)

        def interrupt(done: int, total: int) -> None:
            if done == 2:
                raise KeyboardInterrupt

        with contextlib.suppress(KeyboardInterrupt):
            load_demo_term(resumed, SMALL, progress=interrupt)
        assert resumed.execute("select count(*) from live_sessions where status = 'ended'").fetchone()[0] == 2
        assert load_demo_term(resumed, SMALL) is True
        assert fingerprint(resumed) == fingerprint(whole)
