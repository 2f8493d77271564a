"""The base schema the draft builds on: RLS everywhere, least privilege, as the personas see it."""

from __future__ import annotations

import psycopg
import pytest

from attendance_kit import as_user
from attendance_kit.demo import ADA, ENGINES_LECTURE, GRACE, OLIVE, SAM, TESS

BASE_TABLES = ["attendance_records", "courses", "live_sessions", "profiles", "student_groups",
               "student_profiles"]
RLS_DENIED = psycopg.errors.InsufficientPrivilege


def check_in(conn: psycopg.Connection, who: str, student_id: str | None = None) -> None:
    with as_user(conn, who) as cur:
        cur.execute("insert into attendance_records (session_id, student_id) values (%s, coalesce(%s, auth.uid()))",
                    [ENGINES_LECTURE, student_id])


def set_status(conn: psycopg.Connection, status: str) -> None:
    conn.execute("update live_sessions set status = %s where id = %s", [status, ENGINES_LECTURE])


def visible(conn: psycopg.Connection, who: str, query: str) -> list:
    with as_user(conn, who) as cur:
        return [next(iter(row.values())) for row in cur.execute(query)]


def test_rls_is_enabled_on_every_base_table(conn: psycopg.Connection) -> None:
    rows = conn.execute("""
        select relname, relrowsecurity from pg_class
        where relnamespace = 'public'::regnamespace and relkind = 'r' and relname = any (%s) order by relname
    """, [BASE_TABLES]).fetchall()
    assert rows == [(name, True) for name in BASE_TABLES]


def test_a_student_checks_in_only_while_the_session_is_live(conn: psycopg.Connection) -> None:
    with pytest.raises(RLS_DENIED, match="row-level security"):
        check_in(conn, SAM.email)
    set_status(conn, "live")
    check_in(conn, SAM.email)
    set_status(conn, "ended")
    with pytest.raises(RLS_DENIED):
        check_in(conn, TESS.email)
    assert conn.execute("select count(*) from attendance_records").fetchone()[0] == 1


def test_a_student_checks_in_only_themself_and_only_where_invited(conn: psycopg.Connection) -> None:
    set_status(conn, "live")
    with pytest.raises(RLS_DENIED):
        check_in(conn, SAM.email, student_id=TESS.id)
    with pytest.raises(RLS_DENIED):
        check_in(conn, OLIVE.email)
    with pytest.raises(RLS_DENIED), as_user(conn, SAM.email) as cur:
        cur.execute("insert into attendance_records (session_id, student_id, status) "
                    "values (%s, auth.uid(), false)", [ENGINES_LECTURE])


def test_the_courses_teacher_records_and_corrects_attendance(conn: psycopg.Connection) -> None:
    check_in(conn, ADA.email, student_id=TESS.id)
    with pytest.raises(RLS_DENIED):
        check_in(conn, ADA.email, student_id=OLIVE.id)  # not in the session's groups
    with pytest.raises(RLS_DENIED):
        check_in(conn, GRACE.email, student_id=TESS.id)  # not her course
    with as_user(conn, GRACE.email) as cur:
        assert cur.execute("update attendance_records set status = false").rowcount == 0
    with as_user(conn, ADA.email) as cur:
        assert cur.execute("update attendance_records set status = false").rowcount == 1
    with as_user(conn, TESS.email) as cur:
        assert cur.execute("update attendance_records set status = true").rowcount == 0
    assert conn.execute("select status from attendance_records").fetchone()[0] is False


def test_only_the_courses_teacher_changes_a_sessions_status(conn: psycopg.Connection) -> None:
    for who in (GRACE.email, SAM.email):
        with as_user(conn, who) as cur:
            cur.execute("update live_sessions set status = 'live' where id = %s", [ENGINES_LECTURE])
            assert cur.rowcount == 0
    with as_user(conn, ADA.email) as cur:
        assert cur.execute("update live_sessions set status = 'live' where id = %s", [ENGINES_LECTURE]).rowcount == 1
        with pytest.raises(RLS_DENIED, match="permission denied"):
            cur.execute("update live_sessions set course_id = course_id")


def test_nobody_changes_their_own_role(conn: psycopg.Connection) -> None:
    with pytest.raises(RLS_DENIED, match="permission denied"), as_user(conn, SAM.email) as cur:
        cur.execute("update profiles set role = 'teacher' where id = auth.uid()")
    with as_user(conn, SAM.email) as cur:
        assert cur.execute("update profiles set full_name = 'Samuel Okafor'").rowcount == 1
    assert conn.execute("select count(*) from profiles where full_name = 'Samuel Okafor'").fetchone()[0] == 1


def test_each_persona_sees_its_own_world(conn: psycopg.Connection) -> None:
    sessions = "select title from live_sessions order by title"
    assert visible(conn, SAM.email, sessions) == ["Analytical Engines: lecture 1"]
    assert visible(conn, OLIVE.email, sessions) == ["Compilers: lecture 1"]
    assert visible(conn, ADA.email, sessions) == ["Analytical Engines: lecture 1"]
    people = "select full_name from profiles order by full_name"
    assert visible(conn, ADA.email, people) == ["Ada Lovelace", "Sam Okafor", "Tess Nguyen", "Uma Patel"]
    assert visible(conn, SAM.email, people) == ["Sam Okafor"]
    assert visible(conn, SAM.email, "select name from student_groups") == ["Engines A"]
    assert visible(conn, OLIVE.email, "select title from courses") == ["Compilers"]


def test_anon_holds_no_privilege_on_any_public_table(conn: psycopg.Connection) -> None:
    granted = conn.execute("""
        select table_name, privilege_type from information_schema.role_table_grants
        where grantee = 'anon' and table_schema = 'public'
    """).fetchall()
    assert granted == []


def test_the_publication_exists(conn: psycopg.Connection) -> None:
    assert conn.execute("select count(*) from pg_publication where pubname = 'live_attendance_pub'"
                        ).fetchone()[0] == 1
