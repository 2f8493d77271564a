"""A term of demo sessions for exploratory analytics, written through the real tables, policies and triggers.

Three courses (Ada's, Grace's, and Alan's, a third teacher) meet weekly. In each session the teacher starts it
and opens a channel, students check themselves in (early, on time, late, or not at all; a few are
chronically absent), connections rise and fall, the teacher records the absent, corrects some statuses with a
reason, and ends the session. Every write is made as the person who would make it (`as_user` semantics),
stamped with the session's time through the `attendance_kit.as_of` setting, so `session_analytics`,
`attendance_status_changes` and `session_status_changes` are produced by the kit's own triggers, at fixed
times. The same random seed and sizes give the same term, ids included. Each session is one transaction, so an
interrupted run leaves whole sessions only, and running it again adds the missing ones.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import psycopg

from .connection import become, resolve_user, supabase_claims
from .demo import ADA, COMPILERS_COURSE, COMPILERS_GROUP, ENGINES_COURSE, ENGINES_GROUP, GRACE, Persona

NAMESPACE = uuid.UUID("7b3c1e2a-5d4f-4a6b-9c8d-0e1f2a3b4c5d")
TERM_START = datetime(2026, 1, 19, 9, 0, tzinfo=UTC)  # the week after the personas' lecture 1
# The term's third teacher, with a course and group of her own.
ALAN = Persona("a0000000-0000-4000-8000-000000000003", "alan@attendance-kit.test", "Alan Turing")
COMPUTABILITY_COURSE = "c0000000-0000-4000-8000-000000000003"
COMPUTABILITY_GROUP = "60000000-0000-4000-8000-000000000003"


class Course(NamedTuple):
    id: str
    title: str
    teacher_email: str
    group_id: str
    hour: int  # hours after 09:00 on the day of its session


COURSES = [
    Course(ENGINES_COURSE, "Analytical Engines", ADA.email, ENGINES_GROUP, 0),
    Course(COMPILERS_COURSE, "Compilers", GRACE.email, COMPILERS_GROUP, 2),
    Course(COMPUTABILITY_COURSE, "Computability", ALAN.email, COMPUTABILITY_GROUP, 4),
]
FIRST_NAMES = ["Ana", "Ben", "Chloe", "Dev", "Ema", "Femi", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea", "Milo",
               "Nora", "Omar", "Pia", "Quin", "Rosa", "Teo", "Vera", "Wen", "Yara", "Zeb", "Ines"]
LAST_NAMES = ["Adler", "Brandt", "Costa", "Dahl", "Eze", "Fischer", "Gupta", "Haddad", "Ito", "Jansen", "Kim",
              "Lund", "Moreau", "Novak", "Okoro", "Park", "Quist", "Rossi", "Sato", "Torres"]
# Corrections a teacher makes after the session: (from status, to status, reason, probability per record).
CORRECTIONS = [
    (True, False, "left early", 0.03),
    (False, True, "network down: was in the room", 0.06),
    (False, True, "medical certificate", 0.05),
]
LATE_CORRECTION = "arrived after the first half"


@dataclass(frozen=True)
class Student:
    id: str
    group_id: str
    absence: float  # probability of missing a session
    lateness: float  # probability of arriving late when present


@dataclass(frozen=True)
class TermSize:
    weeks: int = 6
    group_size: int = 24
    random_seed: int = 2026


def term_id(label: str) -> str:
    """A fixed id for a generated row, from its label."""
    return str(uuid.uuid5(NAMESPACE, label))


def load_demo_term(conn: psycopg.Connection, size: TermSize = TermSize(),
                   progress: Callable[[int, int], None] | None = None) -> bool:
    """Generate the term on top of the personas (`load_demo_data` first); False if it was all there already."""
    students = _enrol(conn, size)
    sessions = [(week, course) for week in range(size.weeks) for course in COURSES]
    held = False
    for done, (week, course) in enumerate(sessions, 1):
        # The term's ids and random draws derive from this label, older than the word "session": renaming it would
        # generate another term.
        session = term_id(f"lesson-{course.id}-{week}")
        if not conn.execute("select 1 from public.live_sessions where id = %s", [session]).fetchone():
            with conn.transaction():
                _hold_session(conn, random.Random(f"{size.random_seed}:{session}"), session, week, course,
                              [s for s in students if s.group_id == course.group_id])
            held = True
        if progress:
            progress(done, len(sessions))
    return held


def _enrol(conn: psycopg.Connection, size: TermSize) -> list[Student]:
    """The third teacher, course and group, and generated students filling every group to `group_size`."""
    with conn.transaction():
        conn.execute("insert into auth.users (id, email) values (%s, %s) on conflict do nothing", [ALAN.id, ALAN.email])
        conn.execute("insert into public.profiles (id, full_name, role) values (%s, %s, 'teacher') "
                     "on conflict do nothing", [ALAN.id, ALAN.name])
        conn.execute("insert into public.student_groups (id, name) values (%s, 'Computability C') "
                     "on conflict do nothing", [COMPUTABILITY_GROUP])
        conn.execute("insert into public.courses (id, title, teacher_id) values (%s, 'Computability', %s) "
                     "on conflict do nothing", [COMPUTABILITY_COURSE, ALAN.id])
        students = []
        for group_id in (course.group_id for course in COURSES):
            members = [str(row[0]) for row in conn.execute(
                "select id from public.student_profiles where group_id = %s and student_number not like 'T-%%' "
                "order by id", [group_id])]
            for n in range(len(members), size.group_size):
                rng = random.Random(f"{size.random_seed}:{group_id}:{n}")
                members.append(_generated_student(conn, rng, group_id, n))
            for student_id in members:
                rng = random.Random(f"{size.random_seed}:{student_id}")
                chronic = rng.random() < 0.12
                students.append(Student(student_id, group_id,
                                        absence=rng.uniform(0.35, 0.6) if chronic else rng.uniform(0.02, 0.12),
                                        lateness=rng.uniform(0.05, 0.3)))
    return students


def _generated_student(conn: psycopg.Connection, rng: random.Random, group_id: str, n: int) -> str:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    student_id = term_id(f"student-{group_id}-{n}")
    email = f"{first}.{last}.{n}@attendance-kit.test".lower()
    conn.execute("insert into auth.users (id, email) values (%s, %s) on conflict do nothing", [student_id, email])
    conn.execute("insert into public.profiles (id, full_name, role) values (%s, %s, 'student') "
                 "on conflict do nothing", [student_id, f"{first} {last}"])
    conn.execute("insert into public.student_profiles (id, group_id, student_number) values (%s, %s, %s) "
                 "on conflict do nothing", [student_id, group_id, f"T-{group_id[-1]}{n:03d}"])
    return student_id


@contextmanager
def _acting(conn: psycopg.Connection, who: tuple[str, dict[str, Any]], when: datetime,
            reason: str | None = None) -> Iterator[psycopg.Cursor]:
    """One request by `who` at session time `when` (and with a change reason), like an API call.

    It runs in a savepoint of the session's transaction; what it set is undone at its end, so the next request
    starts as the owner again.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("select set_config('attendance_kit.as_of', %s, true), "
                    "set_config('attendance_kit.change_reason', %s, true)", [when.isoformat(), reason or ""])
        become(cur, *who)
        yield cur
        cur.execute("set local role none")
        cur.execute("select set_config('request.jwt.claims', '', true), set_config('attendance_kit.as_of', '', true), "
                    "set_config('attendance_kit.change_reason', '', true)")


def _hold_session(conn: psycopg.Connection, rng: random.Random, session: str, week: int, course: Course,
                  students: list[Student]) -> None:
    course_id, title, teacher_email, group_id, hour = course
    start = TERM_START + timedelta(weeks=week, hours=hour)
    teacher = resolve_user(conn, teacher_email)
    server = ("service_role", supabase_claims("service_role"))
    conn.execute("insert into public.live_sessions (id, course_id, title, group_ids, starts_at, ends_at) "
                 "values (%s, %s, %s, %s, %s, %s)",
                 [session, course_id, f"{title}: lecture {week + 2}", [group_id], start, start + timedelta(minutes=90)])

    with _acting(conn, teacher, start - timedelta(minutes=5), "session starts") as cur:
        cur.execute("update public.live_sessions set status = 'live' where id = %s", [session])
        cur.execute("insert into public.websocket_channels (session_id, channel_name) values (%s, 'presence')",
                    [session])

    arrivals = sorted(((_arrival(rng, student, start), student) for student in students
                       if rng.random() >= student.absence), key=lambda arrival: (arrival[0], arrival[1].id))
    guests = rng.randint(0, 3)
    for connected, (at, student) in enumerate(arrivals, 1):
        with _acting(conn, server, at - timedelta(seconds=30)) as cur:
            cur.execute("update public.websocket_channels set active_connections = %s, last_activity = %s "
                        "where session_id = %s", [connected + min(guests, connected // 6), at, session])
        with _acting(conn, _student_claims(student), at) as cur:
            cur.execute("insert into public.attendance_records (session_id, student_id) values (%s, auth.uid())",
                        [session])

    end = start + timedelta(minutes=90)
    with _acting(conn, server, end - timedelta(minutes=2)) as cur:
        cur.execute("update public.websocket_channels set active_connections = active_connections / 3, "
                    "last_activity = %s where session_id = %s", [end, session])
    with _acting(conn, teacher, end, "not checked in") as cur:
        cur.execute("insert into public.attendance_records (session_id, student_id, status) "
                    "select %s, sp.id, false from public.student_profiles sp where sp.group_id = %s "
                    "and not exists (select 1 from public.attendance_records ar "
                    "where ar.session_id = %s and ar.student_id = sp.id) order by sp.id",
                    [session, group_id, session])
    _correct(conn, rng, teacher, session, end, arrivals, students, start)
    with _acting(conn, server, end + timedelta(minutes=3)) as cur:
        cur.execute("update public.websocket_channels set active_connections = 0, last_activity = %s "
                    "where session_id = %s", [end + timedelta(minutes=3), session])
    with _acting(conn, teacher, end + timedelta(minutes=15), "session over") as cur:
        cur.execute("update public.live_sessions set status = 'ended' where id = %s", [session])


def _arrival(rng: random.Random, student: Student, start: datetime) -> datetime:
    """Early (up to 10 minutes), on time (first 5 minutes), or late (up to 50 minutes)."""
    if rng.random() < student.lateness:
        minutes = rng.uniform(6, 50)
    else:
        minutes = rng.uniform(-10, 0) if rng.random() < 0.4 else rng.uniform(0, 5)
    return start + timedelta(seconds=round(minutes * 60))


def _student_claims(student: Student) -> tuple[str, dict[str, Any]]:
    return "authenticated", supabase_claims("authenticated", uuid.UUID(student.id))


def _correct(conn: psycopg.Connection, rng: random.Random, teacher: tuple[str, dict[str, Any]], session: str,
             end: datetime, arrivals: list[tuple[datetime, Student]], students: list[Student],
             start: datetime) -> None:
    """The teacher's corrections after the session, each an audited status change with its reason."""
    arrived = {student.id: at for at, student in arrivals}
    changes = []
    for student in students:
        at = arrived.get(student.id)
        if at is not None and at > start + timedelta(minutes=45) and rng.random() < 0.5:
            changes.append((student.id, False, LATE_CORRECTION))
            continue
        for was, becomes, reason, probability in CORRECTIONS:
            if (at is not None) == was and rng.random() < probability:
                changes.append((student.id, becomes, reason))
                break
    for minute, (student_id, status, reason) in enumerate(changes, 5):
        with _acting(conn, teacher, end + timedelta(minutes=minute), reason) as cur:
            cur.execute("update public.attendance_records set status = %s where session_id = %s "
                        "and student_id = %s", [status, session, student_id])
