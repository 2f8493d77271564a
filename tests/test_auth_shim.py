"""The Supabase auth shim: the same functions, roles and grants as Supabase, created only where missing."""

from __future__ import annotations

import json

import psycopg

from attendance_kit import connect, migrate
from attendance_kit.demo import SAM


def claims(conn: psycopg.Connection, value: dict, local: bool = True) -> None:
    conn.execute("select set_config('request.jwt.claims', %s, %s)", [json.dumps(value), local])


def test_uid_role_and_jwt_read_the_request_claims(conn: psycopg.Connection) -> None:
    with conn.transaction():
        claims(conn, {"sub": SAM.id, "role": "authenticated", "email": "sam@attendance-kit.test"})
        row = conn.execute("select auth.uid()::text, auth.role(), auth.jwt() ->> 'email'").fetchone()
    assert row == (SAM.id, "authenticated", "sam@attendance-kit.test")


def test_claims_set_locally_read_as_null_after_commit(conn: psycopg.Connection) -> None:
    with conn.transaction():
        claims(conn, {"sub": SAM.id, "role": "authenticated"})
    # The setting now exists on the connection with value '' (not NULL): casting '' to uuid would fail.
    assert conn.execute("select current_setting('request.jwt.claims', true)").fetchone()[0] == ""
    assert conn.execute("select auth.uid(), auth.role(), auth.jwt()").fetchone() == (None, None, None)


def test_no_claims_at_all_means_no_user(empty_db: str) -> None:
    with connect(empty_db) as conn:
        migrate(conn)
        assert conn.execute("select auth.uid(), auth.role(), auth.jwt()").fetchone() == (None, None, None)


def test_api_roles_have_supabase_attributes(conn: psycopg.Connection) -> None:
    rows = conn.execute("""
        select rolname, rolcanlogin, rolinherit, rolbypassrls from pg_roles
        where rolname in ('anon', 'authenticated', 'service_role') order by rolname
    """).fetchall()
    assert rows == [
        ("anon", False, False, False),
        ("authenticated", False, False, False),
        ("service_role", False, False, True),
    ]


def test_existing_supabase_objects_are_left_untouched(empty_db: str) -> None:
    with connect(empty_db) as conn:
        # A Supabase database already has these, with its own definitions.
        conn.execute("""
            create schema auth;
            create table auth.users (id uuid primary key, email text, instance_id uuid, aud text);
            create function auth.uid() returns uuid language sql stable
                as $$ select '00000000-0000-0000-0000-00000000abcd'::uuid $$;
            create table public.messages (id int primary key);
            create publication supabase_realtime for table public.messages;  -- "Enable Realtime" on a table
        """)
        migrate(conn)
        # The kit's tables join what the project publishes; nothing is taken out.
        realtime = [row[0] for row in conn.execute(
            "select tablename from pg_publication_tables where pubname = 'supabase_realtime' order by 1")]
        assert realtime == ["attendance_records", "attendance_status_changes", "live_sessions", "messages",
                            "session_analytics", "session_status_changes", "websocket_channels"]
        assert str(conn.execute("select auth.uid()").fetchone()[0]) == "00000000-0000-0000-0000-00000000abcd"
        columns = conn.execute("""
            select array_agg(attname::text order by attnum) from pg_attribute
            where attrelid = 'auth.users'::regclass and attnum > 0
        """).fetchone()[0]
        assert columns == ["id", "email", "instance_id", "aud"]
        assert conn.execute("select auth.role()").fetchone()[0] is None


def test_api_roles_may_use_the_auth_functions(conn: psycopg.Connection) -> None:
    for role in ("anon", "authenticated", "service_role"):
        allowed = conn.execute("""
            select has_schema_privilege(%s, 'auth', 'usage')
               and has_function_privilege(%s, 'auth.uid()', 'execute')
               and has_function_privilege(%s, 'auth.jwt()', 'execute')
        """, [role] * 3).fetchone()[0]
        assert allowed, role
