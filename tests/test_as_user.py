"""as_user: statements run as a persona exactly as Supabase's API runs them (role + JWT claims)."""

from __future__ import annotations

import psycopg
import pytest

from attendance_kit import KitError, as_user, connect
from attendance_kit.demo import ADA


def test_a_user_by_email_runs_as_authenticated_with_their_claims(conn: psycopg.Connection) -> None:
    with as_user(conn, "ada@attendance-kit.test") as cur:
        row = cur.execute("select current_user, auth.uid()::text as uid, auth.role() as role, "
                          "auth.jwt() ->> 'email' as email").fetchone()
    assert row == {"current_user": "authenticated", "uid": ADA.id, "role": "authenticated",
                   "email": "ada@attendance-kit.test"}


def test_a_user_by_uuid_is_the_same_user(conn: psycopg.Connection) -> None:
    with as_user(conn, ADA.id) as cur:
        assert cur.execute("select auth.jwt() ->> 'email' as email").fetchone()["email"] == "ada@attendance-kit.test"


def test_anon_and_service_role(conn: psycopg.Connection) -> None:
    with as_user(conn, "anon") as cur:
        assert cur.execute("select current_user, auth.uid() as uid").fetchone() == {"current_user": "anon",
                                                                                      "uid": None}
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            cur.execute("select * from public.courses")
    with as_user(conn, "service_role") as cur:
        assert cur.execute("select count(*) as n from public.courses").fetchone()["n"] == 2


def test_rls_applies_to_the_persona(conn: psycopg.Connection) -> None:
    with as_user(conn, "grace@attendance-kit.test") as cur:
        titles = [r["title"] for r in cur.execute("select title from public.courses order by title")]
    assert titles == ["Compilers"]


def test_the_connection_is_itself_again_afterwards(conn: psycopg.Connection) -> None:
    with as_user(conn, "ada@attendance-kit.test"):
        pass
    assert conn.execute("select current_user, auth.uid()").fetchone() == ("postgres", None)


def test_commit_rollback_and_errors(conn: psycopg.Connection) -> None:
    conn.execute("update live_sessions set status = 'live' where title like 'Analytical%'")
    with as_user(conn, "sam@attendance-kit.test", rollback=True) as cur:
        cur.execute("insert into attendance_records (session_id, student_id) values "
                    "('5e000000-0000-4000-8000-000000000001', auth.uid())")
    assert conn.execute("select count(*) from attendance_records").fetchone()[0] == 0
    with pytest.raises(psycopg.errors.UniqueViolation), as_user(conn, "sam@attendance-kit.test") as cur:
        cur.execute("insert into attendance_records (session_id, student_id) values "
                    "('5e000000-0000-4000-8000-000000000001', auth.uid())")
        cur.execute("insert into attendance_records (session_id, student_id) values "
                    "('5e000000-0000-4000-8000-000000000001', auth.uid())")
    assert conn.execute("select count(*) from attendance_records").fetchone()[0] == 0
    with as_user(conn, "sam@attendance-kit.test") as cur:
        cur.execute("insert into attendance_records (session_id, student_id) values "
                    "('5e000000-0000-4000-8000-000000000001', auth.uid())")
    assert conn.execute("select count(*) from attendance_records").fetchone()[0] == 1


def test_unknown_users_and_open_transactions_are_refused(conn: psycopg.Connection) -> None:
    with pytest.raises(KitError, match="no user with email nobody@example.com"), \
            as_user(conn, "nobody@example.com"):
        pass
    with pytest.raises(KitError, match="'teacher' is not a user"), as_user(conn, "teacher"):
        pass
    with conn.transaction(), pytest.raises(KitError, match="not inside a transaction"), \
            as_user(conn, "anon"):
        pass


def test_a_connection_gives_up_on_a_silent_server_unless_the_url_says_otherwise(db_url: str) -> None:
    with connect(db_url) as conn:
        assert {k: conn.info.get_parameters().get(k) for k in ("connect_timeout", "tcp_user_timeout")} == {
            "connect_timeout": "10", "tcp_user_timeout": "30000"}
    with connect(f"{db_url}?connect_timeout=3") as conn:
        assert conn.info.get_parameters()["connect_timeout"] == "3"
