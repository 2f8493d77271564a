"""The generated authorisation function, held to a committed text (tests/data/realtime_authorisation_golden.sql).

The plans are built by hand (no database): three tables and the three API roles, chosen so the function holds each
of its parts once: the policy form (`attendance_records` as `authenticated`), the generic form with a one-column
key (as `service_role`, whose policies the kit cannot evaluate here) and with a two-column key (`realtime_pairs`,
which the kit's role cannot read whole), a role with no queries at all (`anon`), and a table without RLS, which
Supabase does not ask about (`realtime_open`).

A change to the generated SQL is made on purpose: rewrite the file from the current code with

    .venv/bin/python tests/test_realtime_authorisation.py

then read `git diff tests/data/realtime_authorisation_golden.sql` and commit it with the change. PostgreSQL takes
the text as a function (the second test); the realtime tests on a real server (tests/test_realtime.py) show that
what the code generates still decides what RLS decides.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from attendance_kit.realtime.authorisation import Function, function_sql
from attendance_kit.realtime.catalog import Access, TablePlan

GOLDEN = Path(__file__).parent / "data" / "realtime_authorisation_golden.sql"
ROLES = ("anon", "authenticated", "service_role")
RECORDS_POLICY = ("((session_id = ANY (ARRAY( SELECT private.taught_session_ids() AS taught_session_ids))) "
                  "OR (student_id = ( SELECT private.current_user_id() AS current_user_id)))")


def plans() -> list[TablePlan]:
    records_columns = (("id", "uuid"), ("session_id", "uuid"), ("student_id", "uuid"), ("status", "boolean"),
                       ("checked_in_at", "timestamp with time zone"))
    records_visible = tuple(name for name, _ in records_columns)
    pairs_columns = (("a", "integer"), ("b", "text"), ("note", "text"))
    no_access = Access(key_select=False, visible=(), predicate=None)
    # Predicates as the catalog combines them: one permissive policy is ((its expression)).
    return [
        TablePlan(16524, "public", "attendance_records", ("id",), records_columns, row_security=True,
                  checkable=True, kit_reads_all=True, access={
                      "anon": no_access,
                      "authenticated": Access(True, records_visible, f"(({RECORDS_POLICY}))"),
                      "service_role": Access(True, records_visible, None),
                  }),
        TablePlan(16601, "public", "realtime_pairs", ("a", "b"), pairs_columns, row_security=True, checkable=True,
                  kit_reads_all=False, access={
                      "anon": no_access,
                      "authenticated": Access(True, ("a", "b", "note"), "(((a > 0)))"),
                      "service_role": Access(True, ("a", "b", "note"), None),
                  }),
        TablePlan(16700, "public", "realtime_open", ("id",), (("id", "integer"),), row_security=False,
                  checkable=True, kit_reads_all=True, access={
                      role: Access(True, ("id",), "true") for role in ROLES
                  }),
    ]


def generated() -> str:
    # No connection: psycopg quotes these names and literals as a connection would (standard_conforming_strings).
    return function_sql(None, "kit_realtime_golden", plans(), ROLES, "0123456789abcdef0123456789abcdef",
                        (16524, 16601, 16700)) + "\n"


def test_the_generated_function_is_the_committed_text() -> None:
    assert generated() == GOLDEN.read_text(encoding="utf-8"), (
        "the authorisation function's SQL changed; if on purpose, rewrite the golden file with "
        "`.venv/bin/python tests/test_realtime_authorisation.py` and review its diff")


def test_postgresql_takes_it_and_it_refuses_to_run_on_another_catalog(conn: psycopg.Connection) -> None:
    conn.execute("create table public.realtime_pairs (a int, b text, note text, primary key (a, b))")
    conn.execute("create table public.realtime_open (id int primary key)")
    conn.execute(GOLDEN.read_text(encoding="utf-8"))
    # Built from a catalog of made-up oids and fingerprint: before authorising anyone it asks to be rebuilt.
    no_subscribers, no_rows = ["{}", [], []], [[], [], []] * 3
    call = Function("kit_realtime_golden", plans()).call()
    assert conn.execute(call, [*no_subscribers, *no_rows]).fetchall() == [(-1, -1, -1)]


if __name__ == "__main__":
    GOLDEN.write_text(generated(), encoding="utf-8")
    print(f"wrote {GOLDEN}")
