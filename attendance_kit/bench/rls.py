"""`attendance-kit bench rls`: reads under RLS against the same reads hand-filtered by the table owner.

In a scratch database: 1,010 sessions (Ada teaches 10), 50 students each, 1,000 analytics snapshots per
session (1,010,000 rows), 2 attendance corrections per record, 100 status changes per session, 3 channels per
session. Each persona query of `attendance_kit.plans` runs as the persona under RLS and, alternating with it,
as the owner with the persona's rows named explicitly; the ratio of the medians is the policy's cost. Every
read is planned each time, so the cost of planning the policies counts too.
The policy forms themselves are compared on session_analytics: the draft's, Supabase's first advice alone, the kit's.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import psycopg

from ..connection import become, connect, resolve_user
from ..databases import scratch_database
from ..demo import ADA, COMPILERS_COURSE, ENGINES_COURSE, ENGINES_GROUP, SAM
from ..plans import PERSONA_QUERIES, full_scans

TARGET_RATIO = 1.5
# The draft's form takes ~1 s a run at full size; a few runs show a 200× ratio well enough.
POLICY_FORM_RUNS = 5

# Ids derive from md5 of a label, so a generated row's id can be named again without a lookup.
LOAD_SQL = """
insert into public.student_groups (id, name)
select md5('group' || g)::uuid, 'Bench group ' || g from generate_series(1, %(sessions)s) g;

insert into auth.users (id, email)
select md5('student' || g || '-' || s)::uuid, 'bench-' || g || '-' || s || '@attendance-kit.test'
from generate_series(1, %(sessions)s) g, generate_series(1, %(students)s) s;

insert into public.profiles (id, full_name, role)
select md5('student' || g || '-' || s)::uuid, 'Bench Student ' || g || '-' || s, 'student'
from generate_series(1, %(sessions)s) g, generate_series(1, %(students)s) s;

insert into public.student_profiles (id, group_id, student_number)
select md5('student' || g || '-' || s)::uuid, md5('group' || g)::uuid, 'B-' || g || '-' || s
from generate_series(1, %(sessions)s) g, generate_series(1, %(students)s) s;

-- Ada teaches the first sessions; Sam's group is invited to them too.
insert into public.live_sessions (id, course_id, title, group_ids, status, starts_at)
select md5('session' || g)::uuid,
       case when g <= %(taught)s then %(engines)s::uuid else %(compilers)s::uuid end,
       'Bench session ' || g,
       array[md5('group' || g)::uuid] || case when g <= %(taught)s then array[%(engines_group)s::uuid]
                                              else '{}'::uuid[] end,
       'ended', timestamptz '2026-02-02 09:00+00' + g * interval '1 hour'
from generate_series(1, %(sessions)s) g;

insert into public.attendance_records (session_id, student_id, status, checked_in_at)
select md5('session' || g)::uuid, md5('student' || g || '-' || s)::uuid, s %% 5 <> 0,
       timestamptz '2026-02-02 09:00+00' + g * interval '1 hour'
from generate_series(1, %(sessions)s) g, generate_series(1, %(students)s) s
union all
select md5('session' || g)::uuid, %(sam)s::uuid, true, timestamptz '2026-02-02 09:00+00' + g * interval '1 hour'
from generate_series(1, %(taught)s) g;

insert into public.session_analytics (session_id, total_students, present_count, connection_count, recorded_at)
select md5('session' || g)::uuid, %(students)s, n %% (%(students)s + 1), 3,
       timestamptz '2026-02-02 09:00+00' + g * interval '1 hour' + n * interval '1 second'
from generate_series(1, %(sessions)s) g, generate_series(1, %(snapshots)s) n;

insert into public.attendance_status_changes (attendance_id, old_status, new_status, changed_at)
select ar.id, n %% 2 = 0, n %% 2 = 1, ar.checked_in_at + n * interval '1 minute'
from public.attendance_records ar, generate_series(1, %(corrections)s) n;

insert into public.session_status_changes (session_id, old_status, new_status, changed_at)
select md5('session' || g)::uuid, 'live', 'live', timestamptz '2026-02-02 09:00+00' + n * interval '1 minute'
from generate_series(1, %(sessions)s) g, generate_series(1, %(status_changes)s) n;

insert into public.websocket_channels (session_id, channel_name, active_connections)
select md5('session' || g)::uuid, 'channel-' || c, c from generate_series(1, %(sessions)s) g, generate_series(1, 3) c;
"""

# The same rule as the kit's "Teachers can view session analytics", in the forms the issue measured.
POLICY_FORMS = {
    "draft: exists (... auth.uid())": """
        exists (select 1 from public.live_sessions ls join public.courses c on ls.course_id = c.id
                where ls.id = session_id and c.teacher_id = auth.uid())""",
    "(select auth.uid()), in (subquery)": """
        session_id in (select ls.id from public.live_sessions ls join public.courses c on ls.course_id = c.id
                       where c.teacher_id = (select auth.uid()))""",
    "kit: = any (array (select ...))": "session_id = any (array (select private.taught_session_ids()))",
}


def load_reads(conn: psycopg.Connection, sessions: int = 1010, taught: int = 10, students: int = 50,
               snapshots: int = 1000, corrections: int = 2, status_changes: int = 100) -> None:
    """Generate the read load on top of the demo data (as the owner, straight into the tables), then ANALYZE."""
    # A client-side cursor binds the parameters itself, so one execute may carry many statements.
    with conn.transaction(), psycopg.ClientCursor(conn) as cur:
        cur.execute(LOAD_SQL, {
            "sessions": sessions, "taught": taught, "students": students, "snapshots": snapshots,
            "corrections": corrections, "status_changes": status_changes, "engines": ENGINES_COURSE,
            "compilers": COMPILERS_COURSE, "engines_group": ENGINES_GROUP, "sam": SAM.id,
        })
    conn.execute("analyze")


def hand_filtered(conn: psycopg.Connection, who: str, table: str, query: str) -> str:
    """The persona's query as the owner would write it: the persona's rows named explicitly, no RLS needed."""
    if who.startswith("sam@"):
        if table == "attendance_records":
            condition = f"student_id = '{SAM.id}'"
        else:
            ids = _ids(conn, "select id from public.live_sessions where group_ids && %s::uuid[]", [[ENGINES_GROUP]])
            condition = f"session_id = any ('{{{','.join(ids)}}}'::uuid[])"
    else:
        sessions = _ids(conn, "select ls.id from public.live_sessions ls join public.courses c on c.id = ls.course_id"
                              " where c.teacher_id = %s", [ADA.id])
        if table == "attendance_status_changes":
            ids = _ids(conn, "select id from public.attendance_records where session_id = any (%s)", [sessions])
            condition = f"attendance_id = any ('{{{','.join(ids)}}}'::uuid[])"
        else:
            condition = f"session_id = any ('{{{','.join(sessions)}}}'::uuid[])"
    head, group_by, tail = query.partition(" group by ")
    return f"{head} where {condition}{group_by}{tail}"


def _ids(conn: psycopg.Connection, query: str, params: list) -> list[str]:
    return [str(row[0]) for row in conn.execute(query, params)]


def time_as(conn: psycopg.Connection, who: str | None, query: str) -> float:
    """Seconds to run `query` and fetch its rows, as `who` under RLS (None: as the owner).

    The statement is planned each time, as psql or a first request sends it, so the policies' planning cost counts
    (psycopg would drop a prepared statement at the rollback anyway).
    """
    with conn.transaction(force_rollback=True), conn.cursor() as cur:
        if who is not None:
            become(cur, *resolve_user(conn, who))
        started = time.perf_counter()
        cur.execute(query, prepare=False).fetchall()
        return time.perf_counter() - started


def compare(conn: psycopg.Connection, who: str, query: str, owner_query: str, runs: int) -> dict[str, float]:
    """Medians of alternating runs (after one warm-up each) and their ratio."""
    time_as(conn, who, query)
    time_as(conn, None, owner_query)
    persona, owner = [], []
    for _ in range(runs):
        persona.append(time_as(conn, who, query))
        owner.append(time_as(conn, None, owner_query))
    persona_ms, owner_ms = statistics.median(persona) * 1000, statistics.median(owner) * 1000
    return {"persona_ms": round(persona_ms, 3), "owner_ms": round(owner_ms, 3),
            "ratio": round(persona_ms / owner_ms, 2)}


def policy_forms(conn: psycopg.Connection, runs: int) -> dict[str, dict[str, float]]:
    """The teacher's analytics read under each form of the same policy (each swapped in, then restored)."""
    who, table, query = PERSONA_QUERIES[0]
    owner_query = hand_filtered(conn, who, table, query)
    results = {}
    for name, using in POLICY_FORMS.items():
        with conn.transaction(force_rollback=True):  # the kit's policy is back afterwards
            conn.execute('alter policy "Teachers can view session analytics" on public.session_analytics '
                         f"using ({using})")
            results[name] = compare(conn, who, query, owner_query, runs)
    return results


def rls(runs: int = 101, url: str | None = None, **load: int) -> dict[str, Any]:
    """Run the benchmark in a scratch database on the server at `url` (default: the kit's database)."""
    with scratch_database(url, "all", demo_data=True) as scratch, connect(scratch) as conn:
        started = time.perf_counter()
        load_reads(conn, **load)
        rows = conn.execute("select count(*) from public.session_analytics").fetchone()[0]
        result: dict[str, Any] = {"session_analytics_rows": rows,
                                  "load_seconds": round(time.perf_counter() - started, 1),
                                  "runs": runs, "target_ratio": TARGET_RATIO}
        reads = {}
        for who, table, query in PERSONA_QUERIES:
            reads[f"{who.split('@')[0]} {table}"] = compare(
                conn, who, query, hand_filtered(conn, who, table, query), runs)
        result["reads"] = reads
        result["all_within_target"] = all(r["ratio"] <= TARGET_RATIO for r in reads.values())
        result["full_scans"] = [str(scan) for scan in full_scans(conn)]
        result["policy_forms_session_analytics"] = policy_forms(conn, min(runs, POLICY_FORM_RUNS))
        return result
