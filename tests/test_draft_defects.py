"""Each defect of the draft, shown on its own SQL, and the same check passing on the kit's migrations.

`draft` is a database with the kit's foundation (auth shim, base schema, personas) and then the draft's SQL
verbatim; `conn` is a database with the kit's migrations. The numbers are the defects' in docs/deviations.md.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from attendance_kit import as_user, connect, migrate
from attendance_kit.demo import ADA, ENGINES_LECTURE, GRACE, SAM, TESS, UMA
from attendance_kit.draft import apply_draft, draft_sql
from attendance_kit.lints import run_lints

DRAFT_TABLES = ["session_status_changes", "websocket_channels", "attendance_status_changes", "session_analytics"]


@pytest.fixture
def draft(empty_db: str) -> Iterator[psycopg.Connection]:
    with connect(empty_db) as conn:
        apply_draft(conn)
        yield conn


def enable_rls(conn: psycopg.Connection) -> None:
    for table in DRAFT_TABLES:
        conn.execute(f"alter table public.{table} enable row level security")


def add_channel(conn: psycopg.Connection, name: str, connections: int) -> None:
    conn.execute("insert into websocket_channels (session_id, channel_name, active_connections) values (%s, %s, %s)",
                 [ENGINES_LECTURE, name, connections])


def record(conn: psycopg.Connection, *students: str) -> None:
    conn.execute("insert into attendance_records (session_id, student_id) select %s, unnest(%s::uuid[])",
                 [ENGINES_LECTURE, list(students)])


def snapshots(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("""
        select total_students, present_count, connection_count, status_distribution from session_analytics
        where session_id = %s order by recorded_at, id
    """, [ENGINES_LECTURE]).fetchall()


def test_1_attendance_insert_without_a_channel(draft: psycopg.Connection, conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.NotNullViolation, match="connection_count"):
        record(draft, SAM.id)
    record(conn, SAM.id)
    assert snapshots(conn) == [(1, 1, 0, {"present": 1, "absent": 0})]


def test_2_attendance_insert_with_two_channels(draft: psycopg.Connection, conn: psycopg.Connection) -> None:
    for db in (draft, conn):
        add_channel(db, "presence", 3)
        add_channel(db, "chat", 4)
    with pytest.raises(psycopg.errors.CardinalityViolation, match="more than one row returned by a subquery"):
        record(draft, SAM.id)
    record(conn, SAM.id)
    assert snapshots(conn) == [(1, 1, 7, {"present": 1, "absent": 0})]


def rls_enabled(conn: psycopg.Connection) -> list[bool]:
    return [conn.execute("select relrowsecurity from pg_class where oid = %s::regclass", [t]).fetchone()[0]
            for t in DRAFT_TABLES]


def test_3_rls_is_never_enabled(draft: psycopg.Connection, conn: psycopg.Connection) -> None:
    assert rls_enabled(draft) == [False] * 4
    assert rls_enabled(conn) == [True] * 4
    for db in (draft, conn):
        add_channel(db, "presence", 1)
        record(db, SAM.id)
    # Grace teaches another course: the draft shows her Ada's analytics, the kit does not.
    with as_user(draft, GRACE.email) as cur:
        assert cur.execute("select count(*) as n from session_analytics").fetchone()["n"] == 1
    with as_user(conn, GRACE.email) as cur:
        assert cur.execute("select count(*) as n from session_analytics").fetchone()["n"] == 0


def test_4_teachers_insert_once_rls_is_on(draft: psycopg.Connection, conn: psycopg.Connection) -> None:
    enable_rls(draft)
    for db in (draft, conn):
        add_channel(db, "presence", 2)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match='policy for table "session_analytics"'), \
            as_user(draft, ADA.email) as cur:
        cur.execute("insert into attendance_records (session_id, student_id) values (%s, %s)",
                    [ENGINES_LECTURE, SAM.id])
    with as_user(conn, ADA.email) as cur:
        cur.execute("insert into attendance_records (session_id, student_id) values (%s, %s)",
                    [ENGINES_LECTURE, SAM.id])
        newest = cur.execute("""
            select total_students, present_count, connection_count from session_analytics
            order by recorded_at desc, id desc limit 1
        """).fetchone()
        table = cur.execute("""
            select count(*) as total_students, count(*) filter (where status) as present_count,
                   (select sum(active_connections)::int from websocket_channels) as connection_count
            from attendance_records where session_id = %s
        """, [ENGINES_LECTURE]).fetchone()
    assert newest == table == {"total_students": 1, "present_count": 1, "connection_count": 2}
    assert len(snapshots(conn)) == 1


def test_5_teachers_cannot_forge_or_rewrite_status_history(draft: psycopg.Connection,
                                                          conn: psycopg.Connection) -> None:
    enable_rls(draft)
    forged = ("insert into session_status_changes (session_id, old_status, new_status, changed_by) "
              "values (%s, 'scheduled', 'live', %s)")
    with as_user(draft, ADA.email) as cur:
        cur.execute(forged, [ENGINES_LECTURE, GRACE.id])
        assert cur.execute("update session_status_changes set new_status = 'cancelled'").rowcount == 1
        assert cur.execute("delete from session_status_changes").rowcount == 1

    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"), \
            as_user(conn, ADA.email) as cur:
        cur.execute(forged, [ENGINES_LECTURE, GRACE.id])
    with as_user(conn, ADA.email) as cur:
        cur.execute(forged, [ENGINES_LECTURE, ADA.id])
    for statement in ("update session_status_changes set new_status = 'cancelled'",
                      "delete from session_status_changes"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"), \
                as_user(conn, ADA.email) as cur:
            cur.execute(statement)
    assert conn.execute("select new_status, changed_by::text from session_status_changes").fetchall() == [
        ("live", ADA.id)]


def test_6_status_changes_are_recorded(draft: psycopg.Connection, conn: psycopg.Connection) -> None:
    for db in (draft, conn):
        add_channel(db, "presence", 1)
        record(db, SAM.id)
        with as_user(db, ADA.email) as cur:
            cur.execute("select set_config('attendance_kit.change_reason', 'left after ten minutes', true)")
            cur.execute("update attendance_records set status = false where student_id = %s", [SAM.id])
    assert draft.execute("select count(*) from attendance_status_changes").fetchone()[0] == 0
    assert conn.execute("""
        select old_status, new_status, change_reason, changed_by::text from attendance_status_changes
    """).fetchall() == [(True, False, "left after ten minutes", ADA.id)]


def test_7_one_snapshot_per_statement_not_per_row(draft: psycopg.Connection, conn: psycopg.Connection) -> None:
    for db in (draft, conn):
        add_channel(db, "presence", 1)
        record(db, SAM.id, TESS.id, UMA.id)
    assert len(snapshots(draft)) == 3
    assert snapshots(conn) == [(3, 3, 1, {"present": 3, "absent": 0})]


def test_8_the_draft_references_objects_it_never_defines(empty_db: str) -> None:
    with connect(empty_db) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable, match='relation "live_sessions" does not exist'):
            conn.execute(draft_sql())
        migrate(conn, through="002_base_schema.sql")
        # With the shim and the base schema in place, every object the draft names exists.
        with conn.transaction(force_rollback=True):
            conn.execute(draft_sql())
            tables = conn.execute("""
                select count(*) from pg_publication_tables where pubname = 'live_attendance_pub'
            """).fetchone()[0]
        assert tables == 4


def test_9_policies_evaluate_auth_uid_once_per_statement(draft: psycopg.Connection,
                                                        conn: psycopg.Connection) -> None:
    enable_rls(draft)
    per_row = sorted(f.object for f in run_lints(draft) if f.lint == "auth_rls_initplan")
    assert per_row == [f"{table} policy {name}" for table, name in sorted([
        ("attendance_status_changes", "Teachers can view attendance changes"),
        ("session_analytics", "Teachers can view session analytics"),
        ("session_status_changes", "Teachers can manage session status"),
        ("websocket_channels", "Users can view relevant channels"),
    ])]
    assert [f for f in run_lints(conn) if f.lint == "auth_rls_initplan"] == []


def test_the_draft_fails_the_linter_and_the_kit_passes_it(draft: psycopg.Connection,
                                                                conn: psycopg.Connection) -> None:
    assert {f.lint for f in run_lints(draft)} == {
        "rls_disabled_in_public", "policy_exists_rls_disabled", "function_search_path_mutable",
        "unindexed_foreign_keys", "published_table_without_select_policy", "truncate_granted_to_api_role",
    }
    assert run_lints(conn) == []
