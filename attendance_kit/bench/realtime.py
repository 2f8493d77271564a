"""`attendance-kit bench realtime`: commit-to-delivery latency and sustained changes/s of the realtime client
(`Realtime`) with 1, 100 and 500 RLS-checked subscribers (distinct users with Supabase-sized JWT claims).

The run works in a scratch database of its own on the server (created, migrated, dropped at the end): a teacher
(Ada, from the demo data) and 499 students invited to her live sessions. A writer thread checks students in at a
paced rate, ten per transaction (each transaction: ten `attendance_records` rows and the trigger's one
`session_analytics` row, 11 changes); every subscriber listens to both tables, so every change is RLS-checked for
every subscriber. Latency is delivery time minus the transaction's commit timestamp (the server's clock: measure on
the same machine).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from ..connection import connect, supabase_claims
from ..databases import scratch_database
from ..demo import ADA, ENGINES_COURSE, ENGINES_GROUP
from ..realtime import POLL_INTERVAL, Event, Realtime

STUDENTS = 499
PER_TRANSACTION = 10  # check-ins per writer transaction; with the analytics snapshot, 11 changes
TABLES = ("attendance_records", "session_analytics")


def realtime(subscribers: Sequence[int] = (1, 100, 500), rates: Sequence[int] = (1000, 3000, 5000),
             seconds: float = 5.0, database_url: str | None = None) -> dict[str, Any]:
    """For each subscriber count and offered rate (changes/s): delivered changes/s, latency p50/p95, and how
    long the realtime client took to catch up once the writer stopped (small: it sustained the rate)."""
    with Load(database_url, changes=sum(rates) * seconds * len(subscribers)) as load:
        result = load.describe(seconds)
        for count in subscribers:
            for rate in rates:
                result[f"{count} subscribers @ {rate}/s"] = in_process(load, count, rate, seconds)
        result["target"] = "500 subscribers: >= 1000 changes/s with p95 <= 200 ms (stretch: >= 3000/s)"
        return result


class Load:
    """A scratch database (created, migrated, dropped at the end) with Ada and `students` invited students (499 by
    default), enough live sessions for `changes`, the subscribers' claims (Ada's first) and the check-ins to come."""

    def __init__(self, database_url: str | None, changes: float, students: int = STUDENTS) -> None:
        self.students = students
        self._scratch = scratch_database(database_url, "all", demo_data=True)
        self.url = self._scratch.__enter__()
        try:
            with connect(self.url) as conn:
                self.populate(conn, changes)
                self.version = conn.execute("show server_version").fetchone()[0]
        except BaseException:
            self._scratch.__exit__(None, None, None)
            raise

    def populate(self, conn: psycopg.Connection, changes: float) -> None:
        """The users and sessions; `checkins` (session, student) to come and the subscribers' `claims`."""
        sessions = _populate(conn, self.students, sessions=-(-int(changes * 1.5) // self.students))
        students = [row[0] for row in conn.execute(
            "select id from public.student_profiles where student_number like 'B-%' order by id")]
        self.checkins = ((session, student) for session in sessions for student in students)
        self.claims = [claims_for(ADA.id, ADA.email)] + [
            claims_for(student, f"bench-{i}@attendance-kit.test") for i, student in enumerate(students)]

    def describe(self, seconds: float) -> dict[str, Any]:
        return {"postgres": self.version, "cpus": os.cpu_count(), "claims_bytes": len(json.dumps(self.claims[-1])),
                "changes_per_transaction": PER_TRANSACTION + 1, "seconds_per_run": seconds,
                "poll_interval_ms": round(POLL_INTERVAL * 1000)}

    def vacuum(self) -> None:
        """Each run starts from a vacuumed, analysed state, not amid autovacuum."""
        with connect(self.url) as conn:
            conn.execute("vacuum (analyze) public.attendance_records, public.session_analytics")

    def __enter__(self) -> Load:
        return self

    def __exit__(self, *exc: object) -> None:
        self._scratch.__exit__(*exc)


def claims_for(user_id: str | uuid.UUID, email: str) -> dict[str, Any]:
    """A JWT's claims the size Supabase Auth issues (~0.6 kB): the kit's claims plus session and auth details."""
    now = int(time.time())
    claims = supabase_claims("authenticated", user_id, email)
    claims.update({
        "exp": now + 3600, "iat": now, "phone": "", "session_id": str(uuid.uuid4()),
        "amr": [{"method": "password", "timestamp": now}],
        "user_metadata": {"email": email, "email_verified": True, "phone_verified": False, "sub": str(user_id),
                          "full_name": "Bench Student"},
    })
    return claims


def _populate(conn: psycopg.Connection, students: int, sessions: int) -> list[str]:
    """`students` in Ada's group and `sessions` live sessions of her course; returns the sessions' ids."""
    conn.execute("insert into auth.users (id, email) select gen_random_uuid(), "
                 "'bench-' || g || '@attendance-kit.test' from generate_series(1, %s) g", [students])
    conn.execute("insert into public.profiles (id, full_name, role) "
                 "select id, 'Bench Student', 'student' from auth.users where email like 'bench-%'")
    conn.execute("insert into public.student_profiles (id, group_id, student_number) "
                 "select id, %s, 'B-' || email from auth.users where email like 'bench-%%'", [ENGINES_GROUP])
    return [row[0] for row in conn.execute("""
        insert into public.live_sessions (course_id, title, group_ids, status, starts_at)
        select %s, 'Bench lecture ' || g, array[%s::uuid], 'live', now() from generate_series(1, %s) g
        returning id
    """, [ENGINES_COURSE, ENGINES_GROUP, sessions])]


def in_process(load: Load, subscribers: int, rate: int, seconds: float) -> dict[str, Any]:
    """The realtime client in this process, `subscribers` of the load's claims subscribed, the writer at `rate`."""
    load.vacuum()
    with Realtime(load.url) as client, Writer(load.url, rate, seconds, load.checkins) as writer:
        for subscriber in load.claims[:subscribers]:
            client.subscribe(claims=subscriber, tables=list(TABLES))
        writer.write()  # warm up: the authorisation functions are built outside the measurement
        while client.poll() or client.last_poll_changes:
            pass
        latencies: list[float] = []
        processed = 0
        writer.start()
        started = time.monotonic()
        while processed < writer.changes or writer.is_alive():
            polled = time.monotonic()
            delivered = client.poll()
            now = time.time()
            processed += client.last_poll_changes
            latencies += [now - commit_time(event)
                          for events in delivered.values() for event in events]
            if not writer.is_alive() and time.monotonic() - started > 4 * seconds:
                break  # far behind: report what was done
            if not client.last_poll_changes:
                time.sleep(max(0.0, client.poll_interval - (time.monotonic() - polled)))
        finished = time.monotonic()
    return figures(writer, processed, finished - started, latencies)


def figures(writer: Writer, processed: int, elapsed: float, latencies: list[float],
            unit: str = "changes") -> dict[str, Any]:
    """A run's figures: offered and delivered `unit`s/s (what the writer paces), latency p50/p95, deliveries,
    time to catch up."""
    if writer.error is not None:
        raise writer.error
    latencies.sort()
    return {
        f"offered_{unit}_per_s": round(writer.changes / max(writer.elapsed, 1e-9)),
        f"{unit}_per_s": round(processed / elapsed),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000),
        "p95_ms": round(_percentile(latencies, 0.95) * 1000),
        "deliveries": len(latencies),
        # After the writer stopped, how long until every change was delivered; None: it never caught up.
        "caught_up_ms": round((elapsed - writer.elapsed) * 1000) if processed >= writer.changes else None,
    }


def commit_time(event: Event | dict[str, Any]) -> float:
    """The commit time of a delivered event, to the millisecond Supabase's format keeps."""
    return datetime.strptime(event["commit_timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def _percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))] if values else float("nan")


class Writer(threading.Thread):
    """Checks students in, PER_TRANSACTION per transaction, paced to `rate` changes/s for `seconds`."""

    def __init__(self, url: str, rate: int, seconds: float, checkins: Any) -> None:
        super().__init__(daemon=True)
        self.rate, self.seconds, self.checkins = rate, seconds, checkins
        self.changes = 0
        self.elapsed = 0.0
        self.error: BaseException | None = None
        self._conn = connect(url)

    def write(self) -> int:
        """One transaction; returns its changes: the check-ins and one analytics snapshot per session."""
        batch = self.insert()
        return PER_TRANSACTION + len({session for _, session in batch})

    def insert(self) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """The next PER_TRANSACTION check-ins, in one transaction: each one's (id, session)."""
        batch = [next(self.checkins) for _ in range(PER_TRANSACTION)]
        return self._conn.execute("insert into public.attendance_records (session_id, student_id) "
                                  "select * from unnest(%s::uuid[], %s::uuid[]) returning id, session_id",
                                  [[session for session, _ in batch], [student for _, student in batch]]).fetchall()

    def run(self) -> None:
        started = time.monotonic()
        try:
            while time.monotonic() - started < self.seconds:
                self.changes += self.write()
                ahead = self.changes / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        except BaseException as error:  # reported by the measuring thread
            self.error = error
        finally:
            self.elapsed = time.monotonic() - started

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.is_alive():
            self.join()
        self._conn.close()
