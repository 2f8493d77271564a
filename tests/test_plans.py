"""Reads under RLS reach rows through indexes: EXPLAIN as each persona finds no scan of a whole large table."""

from __future__ import annotations

import psycopg

from attendance_kit.bench.rls import POLICY_FORMS, load_reads, rls
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
                 f"using ({POLICY_FORMS['seed: exists (... auth.uid())']})")
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
