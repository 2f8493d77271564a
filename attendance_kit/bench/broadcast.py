"""`attendance-kit bench gateway --broadcast`: lectures through the gateway the way Supabase tells teams to ship
them (private channels, Broadcast from Database, Presence), beside the postgres_changes path at the same load.

The load, in a scratch database: N clients in lectures of up to `LECTURE_SIZE` (live sessions of generated
teachers' courses, each inviting a group of generated students); a teacher teaches two lectures (at least two
teachers: with fewer than four lectures, one or two each), and each lecture's teacher and its students are
connected, every client a distinct user with its own token. A writer checks students in at R check-ins/s, ten of
one lecture per transaction.

- Broadcast: every client joins `session:<uuid>:lecture` privately, presence on; the students track. sql/008's
  triggers broadcast each check-in (and each analytics snapshot) to the lecture's topic, which only its teacher
  may read.
- postgres_changes: every client joins the same topic (public) with `postgres_changes` on attendance_records
  filtered to its session (the teacher: session_analytics too), as a team would write it; RLS decides per
  subscriber, so a student receives his own check-in and his teacher every one.

Each path has a gateway process of its own (`realtime serve`). Latency is the client's receive time minus the
check-in's `checked_in_at`, which both paths carry in the record: the database's clock (the same machine's), set
at the start of the writer's transaction, so it counts the transaction itself too (`writer_transaction_p95_ms`
bounds that). Checked after each run: every check-in reached its lecture's teacher exactly once (`lost`,
`duplicated`), and nothing reached whom it may not (`misdelivered`: a broadcast to a student, another
student's check-in, another lecture's record).
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import websockets

from ..connection import connect
from ..errors import KitError
from ..realtime.tokens import sign
from .gateway import Served, closed, cpu_seconds, heartbeats
from .realtime import PER_TRANSACTION, Load, Writer, claims_for, figures

LECTURE_SIZE = 100  # clients per lecture, the teacher's included (Supabase's benchmark: 100 users per channel)
JOINING = 100  # clients connecting and joining at once (the gateway's listen backlog is 100)
JOIN_TIMEOUT = 300.0
FILE_MARGIN = 1024  # open files besides the sockets: the libraries, the database connections
PATHS = ("broadcast", "postgres_changes")

TARGET = ("10,000 clients, 1,000 check-ins/s, p95 <= 150 ms commit to client, nothing lost, nothing misdelivered "
          "(2 cores)")
# Supabase's plan limits (limits.mdx): each message delivered to a client counts, and a teacher receiving 1,000
# check-ins/s alone is that many messages/s.
SUPABASE_LIMITS = {
    "Free": "200 connections, 100 messages/s, 20 presence messages/s",
    "Pro": "500 connections, 500 messages/s, 50 presence messages/s",
    "Pro, no spend cap": "10,000 connections, 2,500 messages/s, 1,000 presence messages/s",
}


def broadcast(clients: int = 10_000, rate: int = 1_000, seconds: float = 5.0,
              database_url: str | None = None) -> dict[str, Any]:
    """Both paths at the same load: joins, idle memory, delivered check-ins/s, latency, and what went astray."""
    if clients < 4 or rate < PER_TRANSACTION or seconds <= 0:
        raise KitError(f"--clients {clients}, --rate {rate}, --seconds {seconds:g}: give at least 4 clients (two "
                       f"lectures of a teacher and a student), {PER_TRANSACTION} check-ins/s and some seconds")
    open_files = _open_files_for(clients)
    with Lectures(database_url, clients, checkins=rate * seconds + 2 * PER_TRANSACTION) as load:
        result = load.describe(seconds) | {"open_files_limit": open_files}
        for path in PATHS:
            load.start_over()
            with Served(load.url) as served:
                result[f"{path}: {clients} clients @ {rate} check-ins/s"] = asyncio.run(
                    _through_gateway(served, load, path, rate, seconds))
        result["target"] = TARGET
        result["Supabase's plan limits"] = SUPABASE_LIMITS
        return result


def _open_files_for(clients: int) -> int:
    """Raise this process's soft limit on open files to what `clients` sockets need, up to the hard limit (the
    gateway, started from here, inherits it); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = clients + FILE_MARGIN
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise KitError(f"{clients} clients need {needed} open files, but this shell allows at most {hard}: "
                           f"raise the hard limit (`ulimit -Hn {needed}` as root) or pass fewer --clients")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        soft = needed
    return soft


@dataclass
class Lecture:
    """A live session, its teacher and the group it invites."""

    session: uuid.UUID
    teacher: uuid.UUID
    students: list[uuid.UUID]  # the group invited, the connected ones first
    connected: int  # students with a client


class Lectures(Load):
    """A scratch database with the lectures for `clients` and students enough for `checkins` check-ins (from
    `start_over` on)."""

    def __init__(self, database_url: str | None, clients: int, checkins: float) -> None:
        self.clients = clients
        super().__init__(database_url, checkins)

    def populate(self, conn: psycopg.Connection, changes: float) -> None:
        count = max(2, -(-self.clients // LECTURE_SIZE))
        teachers = [uuid.uuid4() for _ in range(max(2, count // 2))]
        students = self.clients - count
        connected = [students // count + (i < students % count) for i in range(count)]
        per_group = -(-max(*connected, -(-int(changes) // count)) // PER_TRANSACTION) * PER_TRANSACTION
        groups = [[uuid.uuid4() for _ in range(per_group)] for _ in range(count)]
        sessions = _populate_lectures(conn, teachers, groups)
        self.lectures = [Lecture(session, teachers[i % len(teachers)], group, connected[i])
                         for i, (session, group) in enumerate(zip(sessions, groups, strict=True))]
        self.claims = [claims_for(user, f"{user}@bench.attendance-kit.test") for user in (
            *teachers, *(student for group in groups for student in group))]

    def start_over(self) -> None:
        """No check-in yet (a path's run starts where the other's did), the same check-ins to come."""
        with connect(self.url) as conn:
            conn.execute("truncate public.attendance_records cascade")
        self.checkins = _round_robin(self.lectures)

    def describe(self, seconds: float) -> dict[str, Any]:
        teachers = {lecture.teacher for lecture in self.lectures}
        return super().describe(seconds) | {
            "lectures": len(self.lectures), "teachers": len(teachers),
            "students_connected": sum(lecture.connected for lecture in self.lectures),
            "students_invited": sum(len(lecture.students) for lecture in self.lectures)}


def _populate_lectures(conn: psycopg.Connection, teachers: list[uuid.UUID],
                       groups: list[list[uuid.UUID]]) -> list[uuid.UUID]:
    """The teachers, each with a course; group i of students invited to live session i, taught by teacher
    i % teachers; returns the sessions' ids."""
    students = [student for group in groups for student in group]
    group_ids, session_ids = [uuid.uuid4() for _ in groups], [uuid.uuid4() for _ in groups]
    course_ids = [uuid.uuid4() for _ in teachers]
    conn.execute("insert into auth.users (id, email) select id, id || '@bench.attendance-kit.test' "
                 "from unnest(%s::uuid[]) id", [teachers + students])
    conn.execute("insert into public.profiles (id, full_name, role) select id, 'Bench Teacher', 'teacher' "
                 "from unnest(%s::uuid[]) id", [teachers])
    conn.execute("insert into public.profiles (id, full_name, role) select id, 'Bench Student', 'student' "
                 "from unnest(%s::uuid[]) id", [students])
    conn.execute("insert into public.courses (id, title, teacher_id) select c, 'Bench course', t "
                 "from unnest(%s::uuid[], %s::uuid[]) u (c, t)", [course_ids, teachers])
    conn.execute("insert into public.student_groups (id, name) select id, 'Bench group ' || id "
                 "from unnest(%s::uuid[]) id", [group_ids])
    conn.execute("insert into public.student_profiles (id, group_id, student_number) select s, g, 'B-' || s "
                 "from unnest(%s::uuid[], %s::uuid[]) u (s, g)",
                 [students, [group_ids[i] for i, group in enumerate(groups) for _ in group]])
    conn.execute("insert into public.live_sessions (id, course_id, title, group_ids, status, starts_at) "
                 "select s, c, 'Bench lecture', array[g], 'live', now() "
                 "from unnest(%s::uuid[], %s::uuid[], %s::uuid[]) u (s, c, g)",
                 [session_ids, [course_ids[i % len(teachers)] for i in range(len(groups))], group_ids])
    return session_ids


def _round_robin(lectures: list[Lecture]) -> Iterator[tuple[uuid.UUID, uuid.UUID]]:
    """(session, student) check-ins, a transaction's worth of one lecture, then of the next: every lecture busy."""
    for start in range(0, len(lectures[0].students), PER_TRANSACTION):
        for lecture in lectures:
            for student in lecture.students[start:start + PER_TRANSACTION]:
                yield lecture.session, student


class CheckIns(Writer):
    """The writer paced per check-in (its `changes` are check-ins), keeping each one's id and session, and how
    long each transaction took."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.written: list[tuple[uuid.UUID, uuid.UUID]] = []
        self.transactions: list[float] = []

    def write(self) -> int:
        started = time.monotonic()
        self.written += self.insert()
        self.transactions.append(time.monotonic() - started)
        return PER_TRANSACTION


@dataclass(eq=False)
class Member:
    """A lean client of a lecture, its teacher or a student: joins the lecture's topic as the path says, keeps
    each record it receives: (table, id, session, student, latency in s: check-ins only)."""

    url: str
    user: uuid.UUID
    claims: dict[str, Any]
    lecture: Lecture
    teacher: bool
    received: list[tuple[str, str, str, str | None, float | None]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # joined (and tracked), or subscribed
    refused: str | None = None
    presence_frames: int = 0  # presence_state and presence_diff, counted, not read
    ws: websockets.ClientConnection | None = None

    @property
    def topic(self) -> str:
        return f"realtime:session:{self.lecture.session}:lecture"

    async def join(self, path: str) -> asyncio.Task[None]:
        """Connect, start reading, ask to join; the reader's task."""
        token = sign({**self.claims, "exp": int(time.time()) + 3600})
        self.ws = await websockets.connect(f"{self.url}?apikey={token}&vsn=1.0.0", max_size=None,
                                           ping_interval=None)
        reader = asyncio.create_task(self._read(path))
        config = {"private": True, "presence": {"enabled": True, "key": ""}, "postgres_changes": []}
        if path == "postgres_changes":
            tables = ("attendance_records", "session_analytics") if self.teacher else ("attendance_records",)
            config = {"private": False, "presence": {"enabled": False, "key": ""}, "postgres_changes": [
                {"event": "*", "schema": "public", "table": table,
                 "filter": f"session_id=eq.{self.lecture.session}"} for table in tables]}
        await self._send("phx_join", "1", {"config": {"broadcast": {"ack": False, "self": False}, **config},
                                           "access_token": token})
        return reader

    async def _send(self, event: str, ref: str, payload: dict[str, Any]) -> None:
        await self.ws.send(json.dumps({"topic": self.topic, "event": event, "payload": payload, "ref": ref,
                                       "join_ref": "1"}))

    async def _read(self, path: str) -> None:
        async for frame in self.ws:
            now = time.time()
            if '"event":"presence_' in frame[:200]:  # most frames while a lecture joins: left unparsed
                self.presence_frames += 1
                continue
            message = json.loads(frame)
            event, payload = message["event"], message["payload"]
            if event == "broadcast":
                self._record(payload["payload"], now)
            elif event == "postgres_changes":
                self._record(payload["data"], now)
            elif event == "phx_reply" and message["topic"] == self.topic:
                await self._replied(path, message["ref"], payload)
            elif event == "system" and payload["status"] == "ok" and path == "postgres_changes":
                self.ready.set()
            elif event == "system":
                self._refuse(payload["message"])

    async def _replied(self, path: str, ref: str, reply: dict[str, Any]) -> None:
        """The join's reply, then (a student, broadcast) the track's."""
        if reply["status"] != "ok":
            self._refuse(f"{'join' if ref == '1' else 'track'}: {reply['response']}")
        elif ref == "1" and path == "broadcast" and not self.teacher:
            await self._send("presence", "2", {"type": "presence", "event": "track",
                                               "payload": {"user_id": str(self.user), "online_at": time.time()}})
        elif ref == "2" or path == "broadcast":
            self.ready.set()

    def _refuse(self, reason: str) -> None:
        self.refused = reason
        self.ready.set()

    def _record(self, data: dict[str, Any], now: float) -> None:
        record = data["record"]
        latency = None
        if data["table"] == "attendance_records":
            latency = now - datetime.fromisoformat(record["checked_in_at"]).timestamp()
        self.received.append((data["table"], record.get("id"), record.get("session_id"), record.get("student_id"),
                              latency))

    def misdelivered(self, path: str) -> int:
        """What reached this client that may not: another lecture's record; to a student, any broadcast (it would
        carry a classmate's check-in) or anything but his own check-in."""
        session, me = str(self.lecture.session), str(self.user)
        return sum(1 for table, _, record_session, student, _ in self.received if record_session != session or (
            not self.teacher and (path == "broadcast" or table != "attendance_records" or student != me)))


def _members(url: str, load: Lectures) -> list[Member]:
    by_user = {claims["sub"]: claims for claims in load.claims}
    return [Member(url, user, by_user[str(user)], lecture, user == lecture.teacher)
            for lecture in load.lectures
            for user in (lecture.teacher, *lecture.students[:lecture.connected])]


async def _through_gateway(served: Served, load: Lectures, path: str, rate: int, seconds: float) -> dict[str, Any]:
    members = _members(served.url, load)
    cpu = _Cpu(served, load.url)
    memory_before, started = served.resident_kib(), time.monotonic()
    beating = asyncio.create_task(heartbeats(members))  # from the first join: joining takes a while
    readers: list[asyncio.Task[None]] = []
    try:
        await _joined(members, path, readers)
        joined = {"joined_in_s": round(time.monotonic() - started, 1),
                  "presence_frames_joining": sum(member.presence_frames for member in members)} | cpu.seconds("joining")
        await asyncio.sleep(min(1.0, len(members) / 1000))  # the last frames of the joins written
        joined["idle_kib_per_connection"] = round((served.resident_kib() - memory_before) / len(members), 1)
        return joined | await _measured(cpu, load, members, path, rate, seconds)
    finally:
        beating.cancel()
        await closed(members, readers)


class _Cpu:
    """Where the time goes: the CPU time used since the last reading by the gateway's process, this one (the
    clients and the writer) and the database server's (when it runs on this machine: its postmaster's children)."""

    def __init__(self, served: Served, database_url: str) -> None:
        self.served = served
        with connect(database_url) as conn:
            try:
                pid = int(conn.execute("select split_part(pg_read_file('postmaster.pid'), E'\\n', 1)").fetchone()[0])
            except psycopg.Error:  # not a superuser: the server's processes are not counted
                pid = None
        self.postmaster = pid if pid is not None and Path(f"/proc/{pid}").exists() else None
        self._last = self._now()

    def restart(self) -> None:
        self._last = self._now()

    def seconds(self, doing: str) -> dict[str, float]:
        """CPU seconds per process since the last reading, named `<process>_cpu_s_<doing>`."""
        now, last = self._now(), self._last
        self._last = now
        return {f"{name}_cpu_s_{doing}": round(sum(now[name].get(pid, 0.0) - used for pid, used in last[name].items()
                                                   if pid in now[name]), 1) for name in now}

    def _now(self) -> dict[str, dict[int, float]]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"gateway": {0: self.served.cpu_seconds()}, "bench": {0: usage.ru_utime + usage.ru_stime},
                "database": {pid: cpu_seconds(pid) for pid in self._database_pids()}}

    def _database_pids(self) -> list[int]:
        if self.postmaster is None:
            return []
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.postmaster:
                    pids.append(int(stat.parent.name))
            except (FileNotFoundError, ProcessLookupError):
                continue  # gone meanwhile
        return [self.postmaster, *pids]


async def _joined(members: list[Member], path: str, readers: list[asyncio.Task[None]]) -> None:
    """Every member connected and joined, `JOINING` at a time; each one's reader added to `readers`."""
    gate = asyncio.Semaphore(JOINING)

    async def join(member: Member) -> None:
        async with gate:
            readers.append(await member.join(path))
            await member.ready.wait()

    try:
        await asyncio.wait_for(asyncio.gather(*(join(member) for member in members)), JOIN_TIMEOUT)
    except TimeoutError:
        waiting = sum(1 for member in members if not member.ready.is_set())
        raise KitError(f"{waiting} of {len(members)} clients had not joined after {JOIN_TIMEOUT:g} s") from None
    refused = [member.refused for member in members if member.refused is not None]
    if refused:
        raise KitError(f"{len(refused)} of {len(members)} clients were refused, e.g. {refused[0]}")


async def _measured(cpu: _Cpu, load: Lectures, members: list[Member], path: str, rate: int,
                    seconds: float) -> dict[str, Any]:
    load.vacuum()
    teachers = [member for member in members if member.teacher]
    with CheckIns(load.url, rate, seconds, load.checkins) as writer:
        await asyncio.to_thread(writer.write)  # warm up: plans and authorisation functions built outside it
        await _delivered(teachers, len(writer.written), 10.0)
        for member in members:
            member.received.clear()
        writer.written.clear()
        writer.transactions.clear()
        cpu.restart()
        started = time.monotonic()
        writer.start()
        while writer.is_alive() or _checkins_at(teachers) < len(writer.written):
            if not writer.is_alive() and time.monotonic() - started > 4 * seconds:
                break  # far behind: report what was done
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
        used = cpu.seconds("measured")
    await asyncio.sleep(0.5)  # a late duplicate or stray delivery has a moment to show
    latencies = [latency for member in members for *_, latency in member.received if latency is not None]
    result = figures(writer, _checkins_at(teachers), elapsed, latencies, unit="check_ins")
    writer.transactions.sort()
    return result | _astray(members, writer.written, path) | {
        "writer_transaction_p95_ms": round(writer.transactions[int(0.95 * len(writer.transactions))] * 1000, 1)
    } | {name.replace("_s_measured", "_percent"): round(100 * seconds / elapsed) for name, seconds in used.items()}


def _checkins_at(teachers: list[Member]) -> int:
    return sum(1 for teacher in teachers for table, *_ in teacher.received if table == "attendance_records")


async def _delivered(teachers: list[Member], count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _checkins_at(teachers) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def _astray(members: list[Member], written: list[tuple[uuid.UUID, uuid.UUID]], path: str) -> dict[str, int]:
    """Check-ins that never reached their lecture's teacher, deliveries a client had twice, and deliveries to
    whom they should not reach."""
    at_teachers = Counter(str(id) for member in members if member.teacher
                          for table, id, *_ in member.received if table == "attendance_records")
    twice = sum(count - 1 for member in members
                for count in Counter((table, id) for table, id, *_ in member.received).values())
    return {"lost": sum(1 for id, _ in written if at_teachers[str(id)] == 0), "duplicated": twice,
            "misdelivered": sum(member.misdelivered(path) for member in members)}
