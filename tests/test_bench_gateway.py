"""`./kit bench gateway --broadcast` and `--soak`, tiny: their figures' shape, and nothing lost or misdelivered."""

from __future__ import annotations

import json
import uuid

from attendance_kit.bench.broadcast import Lecture, Member
from tests.test_cli import assert_one_line_error, kit

FIGURES = {"joined_in_s", "presence_frames_joining", "gateway_cpu_s_joining", "bench_cpu_s_joining",
           "database_cpu_s_joining", "idle_kib_per_connection", "offered_check_ins_per_s", "check_ins_per_s", "p50_ms",
           "p95_ms", "deliveries", "caught_up_ms", "lost", "duplicated", "misdelivered", "writer_transaction_p95_ms",
           "gateway_cpu_percent", "bench_cpu_percent", "database_cpu_percent"}


def test_broadcast_and_postgres_changes_deliver_every_check_in_to_its_teacher_only(server) -> None:
    result = kit("bench", "gateway", "--broadcast", "--clients", "6", "--rate", "20", "--seconds", "0.5",
                 "--database-url", server.url, "--format", "json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert (figures["lectures"], figures["teachers"], figures["students_connected"]) == (2, 2, 4)
    for path in ("broadcast", "postgres_changes"):
        run = figures[f"{path}: 6 clients @ 20 check-ins/s"]
        assert set(run) == FIGURES
        assert (run["lost"], run["duplicated"], run["misdelivered"]) == (0, 0, 0)
        assert run["offered_check_ins_per_s"] > 0 and run["check_ins_per_s"] > 0
        assert 0 < run["p50_ms"] <= run["p95_ms"] and run["caught_up_ms"] is not None
    # Presence: each lecture's teacher and two students see the students' tracks (state, then diffs).
    assert figures["broadcast: 6 clients @ 20 check-ins/s"]["presence_frames_joining"] >= 2 * (3 + 2)
    assert figures["postgres_changes: 6 clients @ 20 check-ins/s"]["presence_frames_joining"] == 0
    # Broadcasts reach the teachers alone; postgres_changes also gives a checked-in student his own record.
    assert figures["broadcast: 6 clients @ 20 check-ins/s"]["deliveries"] == 10  # one transaction's
    assert figures["postgres_changes: 6 clients @ 20 check-ins/s"]["deliveries"] > 10


def test_a_stray_delivery_is_counted_as_misdelivered() -> None:
    lecture, other = Lecture(uuid.uuid4(), uuid.uuid4(), [uuid.uuid4()], 1), uuid.uuid4()
    teacher = Member("ws://unused", lecture.teacher, {}, lecture, teacher=True)
    student = Member("ws://unused", lecture.students[0], {}, lecture, teacher=False)
    own = ("attendance_records", "1", str(lecture.session), str(student.user), 0.01)
    teacher.received += [own, ("attendance_records", "2", str(other), "x", 0.01)]  # another lecture's check-in
    student.received += [own, ("attendance_records", "3", str(lecture.session), "classmate", 0.01)]
    assert teacher.misdelivered("broadcast") == 1
    assert student.misdelivered("postgres_changes") == 1  # his own check-in, not his classmate's
    assert student.misdelivered("broadcast") == 2  # no broadcast may reach a student


def test_too_few_clients_is_one_line() -> None:
    assert_one_line_error(kit("bench", "gateway", "--broadcast", "--clients", "2"), "--clients 2",
                          "at least 4 clients")


def test_the_soak_reads_the_gateway_s_memory_at_its_start_and_end_and_loses_nothing(server) -> None:
    result = kit("bench", "gateway", "--soak", "--clients", "3", "--rate", "200", "--seconds", "0.6",
                 "--database-url", server.url, "--format", "json")
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)["3 subscribers @ 200/s for 0.6 s"]
    assert run["teacher_lost"] == 0 and run["changes_per_s"] > 0 and 0 < run["p50_ms"] <= run["p95_ms"]
    assert list(run["resident_kib"]) == ["start", "end"] and min(run["resident_kib"].values()) > 10_000
    assert run["deliveries"] > 0.6 * run["changes_per_s"]  # the teacher's every change, and each student's own
