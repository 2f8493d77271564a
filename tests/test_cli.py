"""The attendance-kit command as a user runs it: results on stdout, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import psycopg


def kit(*args: str, state_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ATTENDANCE_KIT_DATABASE_URL"}
    if state_dir:
        env["ATTENDANCE_KIT_STATE_DIR"] = str(state_dir)
    return subprocess.run([sys.executable, "-m", "attendance_kit.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("attendance-kit: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_migrate_twice_applies_nothing_the_second_time(empty_db: str) -> None:
    first = kit("migrate", "--database-url", empty_db, "--demo-data")
    assert first.returncode == 0, first.stderr
    assert "applied 001_supabase_auth_shim.sql, 002_base_schema.sql" in first.stderr
    second = kit("migrate", "--database-url", empty_db, "--demo-data")
    assert second.returncode == 0 and "nothing to apply" in second.stderr
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("select count(*) from auth.users").fetchone()[0] == 7


def test_a_wrong_url_is_one_line_without_the_password() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = kit("migrate", "--database-url", f"postgresql://postgres:s3cret@127.0.0.1:{port}/x")
    assert_one_line_error(result, "cannot connect to postgresql://postgres:***@127.0.0.1", "check the URL")
    assert "s3cret" not in result.stderr
    assert_one_line_error(kit("migrate", "--database-url", "postgresql://h/db?bogus_option=1"),
                          "not a valid database URL")


def test_db_up_url_down(scratch_dir: Path) -> None:
    state = scratch_dir / "state"
    up = kit("db", "up", state_dir=state)
    assert up.returncode == 0, up.stderr
    url = up.stdout.strip()
    assert url.startswith("postgresql://postgres:") and "demo data loaded" in up.stderr
    assert kit("db", "url", state_dir=state).stdout.strip() == url
    again = kit("db", "up", state_dir=state)
    assert again.stdout.strip() == url and "nothing to apply" in again.stderr
    assert kit("db", "down", state_dir=state).returncode == 0
    assert_one_line_error(kit("db", "url", state_dir=state), "not running", "attendance-kit db up")


def test_db_up_on_a_taken_port_is_one_line(scratch_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = kit("db", "up", "--port", str(port), state_dir=scratch_dir / "state")
    assert_one_line_error(result, f"port {port} on 127.0.0.1 is in use", "--port")


def test_bench_startup_reports_its_figures() -> None:
    result = kit("bench", "startup", "--runs", "1", "--format", "json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert set(figures) == {"runs", "accepting_connections_s", "migrated_with_demo_data_s", "target_s"}
    assert figures["runs"] == 1 and 0 < figures["accepting_connections_s"] <= figures["migrated_with_demo_data_s"]
