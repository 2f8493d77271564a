"""Reads under RLS reach rows through indexes: EXPLAIN as each persona finds no scan of a whole large table."""

from __future__ import annotations

import psycopg

from attendance_kit import as_user
from attendance_kit.bench import render
from attendance_kit.bench.rls import POLICY_FORMS, load_reads, rls
from attendance_kit.demo import ADA, SAM
from attendance_kit.plans import PERSONA_QUERIES, full_scans, plan_as

THRESHOLD = 2000  # rows: the generated tables below are larger, but websocket_channels (1,200 rows)


def load(conn: psycopg.Connection) -> None:
    load_reads(conn, sessions=400, taught=4, students=10, snapshots=50, corrections=1, status_changes=10)


def test_no_persona_read_scans_a_large_table(conn: psycopg.Connection) -> None:
    load(conn)
    assert full_scans(conn, THRESHOLD) == []
    plan = plan_as(conn, "ada@attendance-kit.test",
                   "select session_id, count(*) from public.session_analytics group by session_id")
    assert "Index" in str(plan) and "InitPlan" in str(plan)


def test_a_per_row_policy_is_caught(conn: psycopg.Connection) -> None:
    load(conn)
    conn.execute('alter policy "Teachers can view session analytics" on public.session_analytics '
                 f"using ({POLICY_FORMS['draft: exists (... auth.uid())']})")
    scans = [str(scan) for scan in full_scans(conn, THRESHOLD)]
    assert len(scans) == 1
    assert scans[0].startswith("ada@attendance-kit.test reading session_analytics reads all of session_analytics")


def test_the_rls_benchmark_measures_every_persona_read(server) -> None:
    result = rls(runs=1, url=server.url, sessions=60, taught=2, students=5, snapshots=20, corrections=1,
                 status_changes=2)
    assert set(result["reads"]) == {f"{who.split('@')[0]} {table}" for who, table, _ in PERSONA_QUERIES}
    assert all(read["persona_ms"] > 0 and read["owner_ms"] > 0 for read in result["reads"].values())
    assert list(result["policy_forms_session_analytics"]) == list(POLICY_FORMS)
    assert result["session_analytics_rows"] >= 60 * 20
    table = render(result, "table").splitlines()
    assert any(line.split() == ["persona_ms", "owner_ms", "ratio"] for line in table)
    assert all(any(line.split()[:2] == read.split() for line in table) for read in result["reads"])


def test_policies_name_the_user_through_a_function_the_planner_calls(conn: psycopg.Connection) -> None:
    # Inlined, auth.uid() would be parsed and planned again in every statement (sql/002).
    expressions = [row[0] for row in conn.execute(
        "select concat_ws(' ', qual, with_check) from pg_policies where schemaname = 'public'")]
    assert not [expression for expression in expressions if "auth.uid()" in expression]
    assert sum("current_user_id()" in expression for expression in expressions) >= 7
    with as_user(conn, "sam@attendance-kit.test") as cur:
        plan = "\n".join(row["QUERY PLAN"] for row in cur.execute(
            "explain (verbose, costs off) select * from public.attendance_records"))
    assert "private.current_user_id()" in plan and "current_setting" not in plan


def test_the_policies_user_is_auth_uid_whoever_asks(conn: psycopg.Connection) -> None:
    for who, user_id in [(ADA.email, ADA.id), (SAM.email, SAM.id), (ADA.email, ADA.id)]:
        with as_user(conn, who) as cur:
            row = cur.execute("select private.current_user_id()::text as id, auth.uid()::text as uid").fetchone()
        assert row == {"id": user_id, "uid": user_id}
    with as_user(conn, "sam@attendance-kit.test") as cur:  # the older per-claim setting, as auth.uid() reads it
        cur.execute("select set_config('request.jwt.claim.sub', %s, true)", [ADA.id])
        assert str(cur.execute("select private.current_user_id() as id").fetchone()["id"]) == ADA.id


# Each helper's set, as the owner finds it by hand for the user %(user)s.
HELPER_SETS = {
    "taught_session_ids": "select ls.id from public.live_sessions ls join public.courses c on c.id = ls.course_id "
                          "where c.teacher_id = %(user)s",
    "attended_session_ids": "select ls.id from public.live_sessions ls join public.student_profiles sp "
                            "on sp.group_id = any (ls.group_ids) where sp.id = %(user)s",
}


def test_the_helpers_follow_the_user_within_one_connection(conn: psycopg.Connection) -> None:
    # plpgsql keeps its plans for the connection (sql/002): a new user on the same connection gets their own sets.
    load(conn)
    user_ids = dict(conn.execute("select email, id from auth.users where email like '%%@attendance-kit.test'"))
    for email in ["ada@attendance-kit.test", "sam@attendance-kit.test", "olive@attendance-kit.test",
                  "grace@attendance-kit.test", "ada@attendance-kit.test", "sam@attendance-kit.test"]:
        with as_user(conn, email) as cur:
            found = {name: {row["id"] for row in cur.execute(f"select private.{name}() as id")}
                     for name in [*HELPER_SETS, "visible_session_ids"]}
        for name, query in HELPER_SETS.items():
            assert found[name] == {row[0] for row in conn.execute(query, {"user": user_ids[email]})}, (email, name)
        assert found["visible_session_ids"] == found["taught_session_ids"] | found["attended_session_ids"], email
    assert found["attended_session_ids"] and not found["taught_session_ids"]  # the last one, Sam, is a student
