"""Session analytics from running totals (sql/005, issue 5): true under concurrency, one snapshot per session a
statement touches, timestamps in commit order, retention; and the draft's per-row recount failing the same checks.

The invariant: once every writer has committed, each session's newest snapshot (by recorded_at, then id) equals a
direct count of its attendance_records (and the sum of its channels' connections).

The concurrent workload is made adversarial on purpose rather than by chance: each transaction commits only once
every other writer has either finished writing (and not committed) or is waiting for a lock. Writers that take no
lock on one another therefore all write before any of them commits, every time; writers that are serialised by a
lock still make progress.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from attendance_kit import as_user, connect, load_demo_data, migrate
from attendance_kit.demo import ADA, COMPILERS_LECTURE, ENGINES_GROUP, ENGINES_LECTURE, SAM, TESS, UMA
from attendance_kit.draft import apply_draft
from attendance_kit.lints import run_lints

THIRD = "5e000000-0000-4000-8000-000000000003"  # Ada's, created by `prepare`
SESSIONS = [ENGINES_LECTURE, COMPILERS_LECTURE, THIRD]
WRITERS, ROUNDS, POOL = 8, 4, 24
GATE_TIMEOUT_S = 60

ALL_OPS = ("insert", "status", "delete", "move")
# One multi-row check-in per transaction: what the draft's trigger gets right when nothing overlaps (its snapshots
# of one transaction share a time, now(), so with a later status update in the same transaction its newest
# snapshot would be a random one of them).
CHECK_INS = ("insert",)


# --- set-up -----------------------------------------------------------------------------------------------------


@pytest.fixture
def draft_url(empty_db: str) -> str:
    """The kit's foundation with the draft's SQL on top, its NOT NULL defect (1) patched."""
    with connect(empty_db) as conn:
        apply_draft(conn, patch_not_null=True)
    return empty_db


def student_id(writer: int, n: int) -> str:
    return f"d1000000-0000-4000-8000-{writer:04x}{n:08x}"


def prepare(url: str, writers: int = WRITERS, pool: int = POOL) -> list[list[str]]:
    """A third session, one channel per session (the draft's trigger breaks on none or two), and `pool` students
    (group Engines A) for each writer. Returns each writer's students."""
    students = [[student_id(w, n) for n in range(pool)] for w in range(writers)]
    flat = [s for pool_ in students for s in pool_]
    with connect(url) as conn, conn.transaction():
        conn.execute("""
            insert into live_sessions (id, course_id, title, group_ids, starts_at)
            values (%s, 'c0000000-0000-4000-8000-000000000001', 'Analytical Engines: lecture 2', %s, now())
        """, [THIRD, [ENGINES_GROUP]])
        conn.execute("""
            insert into websocket_channels (session_id, channel_name, active_connections)
            values (%s, 'presence', 5), (%s, 'presence', 3), (%s, 'presence', 0)
        """, SESSIONS)
        conn.execute("insert into auth.users (id, email) select u, u || '@students.test' from unnest(%s::uuid[]) u",
                     [flat])
        conn.execute("insert into profiles (id, full_name, role) select u, 'Student ' || u, 'student' "
                     "from unnest(%s::uuid[]) u", [flat])
        conn.execute("insert into student_profiles (id, group_id, student_number) select u, %s, u::text "
                     "from unnest(%s::uuid[]) u", [ENGINES_GROUP, flat])
    return students


NEWEST = """
    select total_students, present_count, connection_count, status_distribution from session_analytics
    where session_id = %s order by recorded_at desc, id desc limit 1
"""
TRUTH = """
    select count(*)::int, (count(*) filter (where status))::int,
           coalesce((select sum(active_connections)::int from websocket_channels where session_id = %(s)s), 0),
           jsonb_build_object('present', count(*) filter (where status), 'absent', count(*) filter (where not status))
    from attendance_records where session_id = %(s)s
"""


def newest(conn: psycopg.Connection, session: str) -> tuple | None:
    return conn.execute(NEWEST, [session]).fetchone()


def truth(conn: psycopg.Connection, session: str) -> tuple:
    return conn.execute(TRUTH, {"s": session}).fetchone()


def wrong_sessions(url: str) -> dict[str, tuple]:
    """Sessions whose newest snapshot is not the truth: {session: (newest, truth)}."""
    with connect(url) as conn:
        pairs = {s: (newest(conn, s), truth(conn, s)) for s in SESSIONS}
    # A session nobody ever recorded attendance in has no snapshot at all.
    return {s: pair for s, pair in pairs.items() if pair[0] != pair[1] and not (pair[0] is None and pair[1][0] == 0)}


def unnest_rows(rows: list[tuple]) -> list[list]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[], [], []]


# --- the concurrent workload --------------------------------------------------------------------------------------


class Writer:
    """One connection's transactions over its own students (so writers never lock each other's rows: they meet
    only in the sessions' analytics). Each transaction checks 3 students into every session in one statement,
    then, as `ops` allow, corrects statuses, deletes a row in up to two sessions, and moves a row to another
    session. Each session's attendance grows by at least one row per transaction."""

    def __init__(self, url: str, students: list[str], ops: tuple[str, ...], random_seed: int) -> None:
        self.conn = connect(url)
        self.students, self.ops, self.rng = students, ops, random.Random(random_seed)
        self.present: dict[str, set[str]] = {s: set() for s in SESSIONS}  # students recorded per session

    def own_rows(self) -> list[tuple[str, str]]:
        return [(s, st) for s in SESSIONS for st in sorted(self.present[s])]

    def transaction(self) -> None:
        rng, conn = self.rng, self.conn
        rows = []
        for s in SESSIONS:
            for st in rng.sample([st for st in self.students if st not in self.present[s]], 3):
                rows.append((s, st, rng.random() < 0.8))
                self.present[s].add(st)
        conn.execute("insert into attendance_records (session_id, student_id, status) "
                     "select * from unnest(%s::uuid[], %s::uuid[], %s::boolean[])", unnest_rows(rows))
        if "status" in self.ops:
            picks = rng.sample(self.own_rows(), 3)
            conn.execute("update attendance_records set status = not status "
                         "where (session_id, student_id) in (select * from unnest(%s::uuid[], %s::uuid[]))",
                         [[s for s, _ in picks], [st for _, st in picks]])
        if "delete" in self.ops:
            picks = [(s, rng.choice(sorted(self.present[s]))) for s in rng.sample(SESSIONS, 2)]
            conn.execute("delete from attendance_records "
                         "where (session_id, student_id) in (select * from unnest(%s::uuid[], %s::uuid[]))",
                         [[s for s, _ in picks], [st for _, st in picks]])
            for s, st in picks:
                self.present[s].discard(st)
        if "move" in self.ops:
            source, target = rng.sample(SESSIONS, 2)
            movable = sorted(self.present[source] - self.present[target])
            if movable:
                st = rng.choice(movable)
                conn.execute("update attendance_records set session_id = %s where session_id = %s and student_id = %s",
                             [target, source, st])
                self.present[source].discard(st)
                self.present[target].add(st)

    def close(self) -> None:
        self.conn.close()


def run_workload(url: str, students: list[list[str]], ops: tuple[str, ...], overlap: bool = True,
                 rounds: int = ROUNDS, random_seed: int = 5) -> list[dict[str, tuple]]:
    """`rounds` rounds of one transaction per writer, all writers at once. With `overlap`, each commits only when
    every other writer of the round has written or waits for a lock; without it, one transaction at a time.
    Returns, for each round once all its writers committed, the sessions whose newest snapshot is wrong."""
    writers = [Writer(url, pool, ops, random_seed * 1000 + i) for i, pool in enumerate(students)]
    pids = [w.conn.info.backend_pid for w in writers]
    monitor, monitor_lock, one_at_a_time = connect(url), threading.Lock(), threading.Lock()
    wrote = [[threading.Event() for _ in writers] for _ in range(rounds)]
    start = threading.Barrier(len(writers), timeout=GATE_TIMEOUT_S)
    after_each_round: list[dict[str, tuple]] = []
    end = threading.Barrier(len(writers), timeout=GATE_TIMEOUT_S,
                            action=lambda: after_each_round.append(wrong_sessions(url)))

    def all_others_written_or_blocked(r: int, i: int) -> None:
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while True:
            pending = [pids[j] for j in range(len(writers)) if j != i and not wrote[r][j].is_set()]
            if not pending:
                return
            with monitor_lock:
                blocked = monitor.execute("select count(*) from pg_stat_activity "
                                          "where pid = any(%s) and wait_event_type = 'Lock'", [pending]).fetchone()[0]
            if blocked == len(pending):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"round {r}: writer {i} still waits for {len(pending) - blocked} writers")
            time.sleep(0.002)

    def work(i: int) -> None:
        writer = writers[i]
        try:
            for r in range(rounds):
                start.wait()
                if overlap:
                    with writer.conn.transaction():
                        writer.transaction()
                        wrote[r][i].set()
                        all_others_written_or_blocked(r, i)
                else:
                    with one_at_a_time, writer.conn.transaction():
                        writer.transaction()
                end.wait()
        except BaseException:
            start.abort()
            end.abort()
            for events in wrote:
                for event in events:
                    event.set()
            raise

    try:
        with ThreadPoolExecutor(len(writers)) as pool:
            for future in [pool.submit(work, i) for i in range(len(writers))]:
                future.result()
    finally:
        for writer in writers:
            writer.close()
        monitor.close()
    return after_each_round


@pytest.mark.parametrize("ops", [ALL_OPS, CHECK_INS], ids=["inserts-updates-deletes-moves", "check-ins"])
def test_concurrent_writers_leave_the_newest_snapshot_true(db_url: str, ops: tuple[str, ...]) -> None:
    students = prepare(db_url)
    assert run_workload(db_url, students, ops) == [{}] * ROUNDS
    with connect(db_url) as conn:
        # Every transaction wrote one snapshot per session per statement touching it, all in commit order.
        assert conn.execute("select count(*) from session_analytics").fetchone()[0] >= WRITERS * ROUNDS * 3
        assert conn.execute("""
            select count(*) from (select recorded_at <= lag(recorded_at) over w as out_of_order
                                  from session_analytics window w as (partition by session_id order by recorded_at, id)
                                 ) s where out_of_order
        """).fetchone()[0] == 0


def test_the_drafts_trigger_loses_concurrent_check_ins(draft_url: str) -> None:
    students = prepare(draft_url)
    after_each_round = run_workload(draft_url, students, CHECK_INS)
    # In every round the newest snapshot of every session misses check-ins the other writers committed
    # (typically all 21 of the other seven writers': each snapshot counted its own 3 per session).
    assert len(after_each_round) == ROUNDS
    for wrong in after_each_round:
        assert sorted(wrong) == SESSIONS
        for snapshot, counted in wrong.values():
            assert snapshot[0] < counted[0]


def test_the_drafts_trigger_is_right_when_check_ins_do_not_overlap(draft_url: str) -> None:
    """The control: the same workload one transaction at a time passes on the draft, so concurrency is the cause."""
    students = prepare(draft_url)
    assert run_workload(draft_url, students, CHECK_INS, overlap=False) == [{}] * ROUNDS


def test_contended_rows_stay_right(db_url: str) -> None:
    """Writers fighting over the same few rows: upserts, status flips, deletes and moves of shared rows, in
    transactions of one to three statements, retried on deadlock and unique violation. Concurrent updates of a
    row re-read its latest version, concurrent deletes of one row count once."""
    prepare(db_url, writers=1, pool=10)
    shared = [student_id(0, n) for n in range(10)]

    def work(i: int) -> None:
        rng = random.Random(i)
        with connect(db_url) as conn:
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                # Deadlocks are expected here: detect them in 20 ms instead of a second (needs a superuser).
                conn.execute("set deadlock_timeout = '20ms'")
            for _ in range(30):
                statements = [contended_statement(rng, shared) for _ in range(rng.randint(1, 3))]
                try:
                    with conn.transaction():
                        for query, params in statements:
                            conn.execute(query, params)
                except (psycopg.errors.DeadlockDetected, psycopg.errors.UniqueViolation):
                    pass

    with ThreadPoolExecutor(WRITERS) as pool:
        for future in [pool.submit(work, i) for i in range(WRITERS)]:
            future.result()
    assert wrong_sessions(db_url) == {}
    with connect(db_url) as conn:
        assert conn.execute("select count(*) from attendance_records").fetchone()[0] > 0


def contended_statement(rng: random.Random, students: list[str]) -> tuple[str, list]:
    sessions, picked = rng.sample(SESSIONS, 2), rng.sample(students, 3)
    return rng.choice([
        ("insert into attendance_records (session_id, student_id, status) "
         "select %s, unnest(%s::uuid[]), %s on conflict (session_id, student_id) do nothing",
         [sessions[0], picked, rng.random() < 0.5]),
        ("insert into attendance_records (session_id, student_id, status) select %s, unnest(%s::uuid[]), %s "
         "on conflict (session_id, student_id) do update set status = excluded.status",
         [sessions[0], picked, rng.random() < 0.5]),
        ("update attendance_records set status = not status where student_id = any(%s)", [picked]),
        ("delete from attendance_records where session_id = any(%s) and student_id = any(%s)", [sessions, picked]),
        ("update attendance_records ar set session_id = %s where ar.session_id = %s and ar.student_id = any(%s)",
         [sessions[1], sessions[0], picked]),
    ])


# --- one snapshot per session a statement touches; timestamps -------------------------------------------------


def snapshot_count(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("select session_id::text, count(*) from session_analytics group by 1").fetchall())


def test_a_bulk_statement_writes_one_snapshot_per_session(conn: psycopg.Connection) -> None:
    three = [SAM.id, TESS.id, UMA.id]
    conn.execute("insert into attendance_records (session_id, student_id, status) "
                 "select s, st, st <> %s from unnest(%s::uuid[]) s cross join unnest(%s::uuid[]) st",
                 [UMA.id, [ENGINES_LECTURE, COMPILERS_LECTURE], three])
    assert snapshot_count(conn) == {ENGINES_LECTURE: 1, COMPILERS_LECTURE: 1}
    assert newest(conn, ENGINES_LECTURE) == truth(conn, ENGINES_LECTURE) == (3, 2, 0, {"present": 2, "absent": 1})

    # A move out of one session into another: one snapshot for each.
    conn.execute("delete from attendance_records where session_id = %s and student_id = %s",
                 [COMPILERS_LECTURE, SAM.id])
    conn.execute("update attendance_records set session_id = %s where session_id = %s and student_id = %s",
                 [COMPILERS_LECTURE, ENGINES_LECTURE, SAM.id])
    assert snapshot_count(conn) == {ENGINES_LECTURE: 2, COMPILERS_LECTURE: 3}
    assert conn.execute("delete from attendance_records where student_id = any(%s)", [three]).rowcount == 5
    assert snapshot_count(conn) == {ENGINES_LECTURE: 3, COMPILERS_LECTURE: 4}
    for session in (ENGINES_LECTURE, COMPILERS_LECTURE):
        assert newest(conn, session) == truth(conn, session) == (0, 0, 0, {"present": 0, "absent": 0})
    # A statement that changes no row writes nothing.
    conn.execute("update attendance_records set status = true where false")
    assert snapshot_count(conn) == {ENGINES_LECTURE: 3, COMPILERS_LECTURE: 4}


def test_statements_of_one_transaction_get_increasing_times(conn: psycopg.Connection) -> None:
    with conn.transaction():
        for student in (SAM.id, TESS.id, UMA.id):
            conn.execute("insert into attendance_records (session_id, student_id) values (%s, %s)",
                         [ENGINES_LECTURE, student])
    times = [t for (t,) in conn.execute("select recorded_at from session_analytics order by recorded_at, id")]
    assert len(times) == 3 and times == sorted(set(times))
    assert newest(conn, ENGINES_LECTURE)[:2] == (3, 3)


def check_in(conn: psycopg.Connection, student: str) -> None:
    conn.execute("insert into attendance_records (session_id, student_id) values (%s, %s)", [ENGINES_LECTURE, student])


def started_early_committed_late(url: str) -> None:
    """T1 starts first, T2 checks Sam in and commits, then T1 checks Tess in and commits."""
    with connect(url) as first, connect(url) as second, first.transaction():
        first.execute("select now()")
        with second.transaction():
            check_in(second, SAM.id)
        check_in(first, TESS.id)


def writer_blocked_by_another(url: str) -> None:
    """T1 checks Sam in; T2 checks Tess in meanwhile (on the kit it waits for T1's lock); T1 commits, then T2."""
    second_wrote, first_committed = threading.Event(), threading.Event()

    def second_writer(conn: psycopg.Connection) -> None:
        with conn.transaction():
            check_in(conn, TESS.id)
            second_wrote.set()
            first_committed.wait(GATE_TIMEOUT_S)

    with connect(url) as first, connect(url) as second, connect(url) as monitor, ThreadPoolExecutor(1) as pool:
        with first.transaction():
            check_in(first, SAM.id)
            later = pool.submit(second_writer, second)
            deadline = time.monotonic() + GATE_TIMEOUT_S
            while not second_wrote.is_set() and monitor.execute(
                    "select wait_event_type is distinct from 'Lock' from pg_stat_activity where pid = %s",
                    [second.info.backend_pid]).fetchone()[0]:
                assert time.monotonic() < deadline, "the second writer neither wrote nor blocked"
                time.sleep(0.002)
        first_committed.set()
        later.result()


@pytest.mark.parametrize("schedule", [started_early_committed_late, writer_blocked_by_another])
def test_a_later_commit_sorts_later(db_url: str, draft_url: str, schedule: Callable[[str], None]) -> None:
    for url in (db_url, draft_url):
        with connect(url) as conn:
            conn.execute("insert into websocket_channels (session_id, channel_name) values (%s, 'presence')",
                         [ENGINES_LECTURE])
        schedule(url)
    assert wrong_sessions(db_url) == {}
    # The draft stamps snapshots with the transaction's start (now()), and its overlapping writers miss each other.
    with connect(draft_url) as draft:
        assert newest(draft, ENGINES_LECTURE)[:2] == (1, 1) != truth(draft, ENGINES_LECTURE)[:2] == (2, 2)


# --- deletes of sessions, truncate, RLS, backfill -----------------------------------------------------------------


def test_deleting_a_session_with_attendance_cascades_and_writes_nothing_for_it(conn: psycopg.Connection) -> None:
    conn.execute("insert into attendance_records (session_id, student_id) values (%s, %s), (%s, %s)",
                 [ENGINES_LECTURE, SAM.id, COMPILERS_LECTURE, SAM.id])
    conn.execute("delete from live_sessions where id = %s", [ENGINES_LECTURE])
    assert snapshot_count(conn) == {COMPILERS_LECTURE: 1}
    assert conn.execute("select session_id::text from private.session_attendance_totals").fetchall() == [
        (COMPILERS_LECTURE,)]
    assert newest(conn, COMPILERS_LECTURE) == truth(conn, COMPILERS_LECTURE)


def test_truncate_resets_the_totals(conn: psycopg.Connection) -> None:
    conn.execute("insert into attendance_records (session_id, student_id) values (%s, %s), (%s, %s)",
                 [ENGINES_LECTURE, SAM.id, ENGINES_LECTURE, TESS.id])
    conn.execute("truncate attendance_records cascade")
    assert newest(conn, ENGINES_LECTURE) == truth(conn, ENGINES_LECTURE) == (0, 0, 0, {"present": 0, "absent": 0})
    check_in(conn, UMA.id)
    assert newest(conn, ENGINES_LECTURE) == truth(conn, ENGINES_LECTURE) == (1, 1, 0, {"present": 1, "absent": 0})


def test_a_teachers_check_in_through_rls_and_the_totals_stay_private(conn: psycopg.Connection) -> None:
    with as_user(conn, ADA.email) as cur:
        cur.execute("insert into attendance_records (session_id, student_id) values (%s, %s), (%s, %s)",
                    [ENGINES_LECTURE, SAM.id, ENGINES_LECTURE, TESS.id])
        cur.execute("update attendance_records set status = false where student_id = %s", [TESS.id])
        assert cur.execute(NEWEST, [ENGINES_LECTURE]).fetchone() == {
            "total_students": 2, "present_count": 1, "connection_count": 0,
            "status_distribution": {"present": 1, "absent": 1}}
    for who in ("anon", ADA.email, "service_role"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), as_user(conn, who) as cur:
            cur.execute("select * from private.session_attendance_totals")


def test_the_step_counts_attendance_recorded_before_it(empty_db: str) -> None:
    with connect(empty_db) as conn:
        migrate(conn, through="004_security_policies.sql")
        load_demo_data(conn)
        conn.execute("insert into attendance_records (session_id, student_id, status) values (%s, %s, true), "
                     "(%s, %s, false), (%s, %s, true)",
                     [ENGINES_LECTURE, SAM.id, ENGINES_LECTURE, TESS.id, COMPILERS_LECTURE, SAM.id])
        assert migrate(conn, through="005_functions_and_triggers.sql") == ["005_functions_and_triggers.sql"]
        assert snapshot_count(conn) == {}
        check_in(conn, UMA.id)
        assert snapshot_count(conn) == {ENGINES_LECTURE: 1}
        assert newest(conn, ENGINES_LECTURE) == truth(conn, ENGINES_LECTURE) == (3, 2, 0, {"present": 2, "absent": 1})
        conn.execute("update attendance_records set status = false where session_id = %s", [COMPILERS_LECTURE])
        assert newest(conn, COMPILERS_LECTURE) == truth(conn, COMPILERS_LECTURE) == (
            1, 0, 0, {"present": 0, "absent": 1})


# --- retention and privileges -------------------------------------------------------------------------------------


def test_pruning_keeps_recent_snapshots_and_the_newest_of_each_session(conn: psycopg.Connection) -> None:
    for student in (SAM.id, TESS.id, UMA.id):
        check_in(conn, student)
    conn.execute("insert into attendance_records (session_id, student_id) values (%s, %s)", [COMPILERS_LECTURE, SAM.id])
    # Age every snapshot by 40 days but Ada's session's last one.
    conn.execute("""
        update session_analytics set recorded_at = recorded_at - interval '40 days'
        where id <> (select id from session_analytics where session_id = %s order by recorded_at desc, id desc limit 1)
    """, [ENGINES_LECTURE])
    before = {s: newest(conn, s) for s in (ENGINES_LECTURE, COMPILERS_LECTURE)}
    assert conn.execute("select private.prune_session_analytics(interval '30 days')").fetchone()[0] == 2
    # Compilers' only snapshot is old but the newest.
    assert snapshot_count(conn) == {ENGINES_LECTURE: 1, COMPILERS_LECTURE: 1}
    assert {s: newest(conn, s) for s in (ENGINES_LECTURE, COMPILERS_LECTURE)} == before
    assert conn.execute("select private.prune_session_analytics(interval '0')").fetchone()[0] == 0
    with pytest.raises(psycopg.errors.RaiseException, match="keep must be an interval >= 0"):
        conn.execute("select private.prune_session_analytics(interval '-1 day')")


def test_only_the_owner_and_service_role_prune_and_nobody_calls_the_trigger(conn: psycopg.Connection) -> None:
    check_in(conn, SAM.id)
    with as_user(conn, "service_role") as cur:
        assert cur.execute("select private.prune_session_analytics(interval '0') as n").fetchone()["n"] == 0
    for who in ("anon", ADA.email):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), as_user(conn, who) as cur:
            cur.execute("select private.prune_session_analytics(interval '0')")
    rows = conn.execute("""
        select p.oid::regprocedure::text, p.prosecdef, p.proconfig,
               array(select r from unnest(array['anon', 'authenticated', 'service_role']) r
                     where has_function_privilege(r, p.oid, 'execute'))
        from pg_proc p
        where p.oid in ('public.update_session_analytics()'::regprocedure,
                        'private.prune_session_analytics(interval)'::regprocedure,
                        'private.snapshot_time(timestamptz)'::regprocedure)
        order by 1
    """).fetchall()
    assert rows == [
        ("private.prune_session_analytics(interval)", False, ['search_path=""'], ["service_role"]),
        ("private.snapshot_time(timestamp with time zone)", False, ['search_path=""'], []),
        ("update_session_analytics()", True, ['search_path=""'], []),
    ]
    assert run_lints(conn) == []
