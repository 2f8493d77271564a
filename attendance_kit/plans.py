"""Query plans under RLS: the personas' realistic reads, and a check that none scans a large table whole.

The form of a policy decides the plan. A policy that computes the persona's allowed set once per statement
(`= any (array (select ...))`) lets PostgreSQL reach rows through an index; one that is evaluated per row
makes it read every row of the table. `full_scans` runs EXPLAIN as the persona and names each scan that
reads a table above a size threshold whole (a sequential scan, or an index scan without an index condition,
which the planner picks to read in order), so a slow policy added later is caught by a test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg

from .connection import become, resolve_user
from .demo import ADA, SAM


class PersonaRead(NamedTuple):
    """A read the notebooks make: what `who` runs through the API against `table`."""

    who: str
    table: str
    query: str


PERSONA_QUERIES = [
    PersonaRead(ADA.email, "session_analytics",
     "select session_id, count(*), max(present_count) from public.session_analytics group by session_id"),
    PersonaRead(ADA.email, "attendance_records",
     "select session_id, count(*) filter (where status) from public.attendance_records group by session_id"),
    PersonaRead(ADA.email, "attendance_status_changes",
     "select new_status, count(*) from public.attendance_status_changes group by new_status"),
    PersonaRead(ADA.email, "session_status_changes",
     "select session_id, max(changed_at) from public.session_status_changes group by session_id"),
    PersonaRead(ADA.email, "websocket_channels",
     "select session_id, sum(active_connections) from public.websocket_channels group by session_id"),
    PersonaRead(SAM.email, "attendance_records",
     "select session_id, status from public.attendance_records"),
    PersonaRead(SAM.email, "websocket_channels",
     "select session_id, channel_name from public.websocket_channels"),
]
DEFAULT_THRESHOLD_ROWS = 10_000


@dataclass(frozen=True)
class FullScan:
    persona: str
    table: str
    query: str
    scanned: str
    rows: int

    def __str__(self) -> str:
        return (f"{self.persona} reading {self.table} reads all of {self.scanned} (~{self.rows} rows): "
                "its policy is not index-friendly")


def plan_as(conn: psycopg.Connection, who: str, query: str) -> dict[str, Any]:
    """EXPLAIN's JSON plan of `query` run as `who` (nothing is executed)."""
    role, claims = resolve_user(conn, who)
    with conn.transaction(force_rollback=True), conn.cursor() as cur:
        become(cur, role, claims)
        plan = cur.execute(f"explain (format json) {query}").fetchone()[0]
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]


def full_scans(conn: psycopg.Connection, threshold_rows: int = DEFAULT_THRESHOLD_ROWS,
               queries: list[PersonaRead] = PERSONA_QUERIES) -> list[FullScan]:
    """Every scan, in the persona queries' plans, that reads a table with more than `threshold_rows` whole."""
    sizes = dict(conn.execute(
        "select c.relname, c.reltuples::bigint from pg_class c where c.relnamespace = 'public'::regnamespace"
    ).fetchall())
    found = []
    for who, table, query in queries:
        for node in _nodes(plan_as(conn, who, query)):
            scanned = node.get("Relation Name")
            whole = node["Node Type"] == "Seq Scan" or (
                node["Node Type"] in ("Index Scan", "Index Only Scan") and "Index Cond" not in node)
            if whole and sizes.get(scanned, 0) > threshold_rows:
                found.append(FullScan(who, table, query, scanned, sizes[scanned]))
    return found


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan] + [node for child in plan.get("Plans", []) for node in _nodes(child)]
