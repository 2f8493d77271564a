"""Kit commands started at once on one cluster take turns (its state directory's lock): each ends in a defined state
and says so in one line, never in a traceback. Real processes of the command line, each test on a cluster of its
own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from attendance_kit.server import Cluster

WAITING = "waiting for another kit command to finish with the cluster in "


def start(*args: str, state_dir: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "ATTENDANCE_KIT_DATABASE_URL"}
    env["ATTENDANCE_KIT_STATE_DIR"] = str(state_dir)
    return subprocess.Popen([sys.executable, "-m", "attendance_kit.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=120)
    assert "Traceback" not in stderr, stderr
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def said(result: subprocess.CompletedProcess) -> list[str]:
    """What a command said on stderr, but for the line saying it waited for another."""
    return [line for line in result.stderr.splitlines() if not line.startswith(WAITING)]


def test_three_db_up_at_once_on_a_fresh_state_directory_make_one_cluster(scratch_dir: Path) -> None:
    state = scratch_dir / "state"
    results = [finish(up) for up in [start("db", "up", state_dir=state) for _ in range(3)]]
    try:
        assert [result.returncode for result in results] == [0, 0, 0], [result.stderr for result in results]
        (url,) = {result.stdout.strip() for result in results}
        password = (state / "password").read_text().strip()
        assert url == f"postgresql://postgres:{password}@127.0.0.1:{Cluster(state).port}/postgres"
        # One initdb, one migration: the others found the cluster made, running and migrated.
        assert sorted(path.name for path in state.iterdir()) == ["lock", "password", "pgdata"]
        assert sum("applied 001_supabase_auth_shim.sql" in result.stderr for result in results) == 1
        with psycopg.connect(url) as conn:
            assert conn.execute("select count(*) from auth.users").fetchone()[0] == 7
    finally:
        Cluster(state).down()


def test_db_up_racing_two_db_down_each_ends_in_a_defined_state(scratch_dir: Path) -> None:
    state = scratch_dir / "state"
    cluster = Cluster(state)
    url = cluster.up()
    cluster.down()
    try:
        down, up, down_again = [start("db", command, state_dir=state) for command in ("down", "up", "down")]
        up, downs = finish(up), [finish(down), finish(down_again)]
        assert (up.returncode, up.stdout) == (0, url + "\n"), up.stderr
        assert all(down.returncode == 0 and said(down) in (["stopped"], ["not running"]) for down in downs), downs
        # In turns: a down after the up stopped it (and only one could), else the up came last and it runs.
        stopped = sum(said(down) == ["stopped"] for down in downs)
        assert stopped <= 1
        assert (cluster.running_pid() is None) == (stopped == 1)
        url_now = finish(start("db", "url", state_dir=state))
        assert (url_now.returncode, url_now.stdout) == ((1, "") if stopped else (0, url + "\n"))
    finally:
        cluster.down()


def test_a_server_killed_while_another_command_holds_the_cluster_is_recovered_by_the_db_up_waiting(
        scratch_dir: Path) -> None:
    state = scratch_dir / "state"
    cluster = Cluster(state)
    url = cluster.up()
    try:
        with Cluster(state).lock:  # another command at work on the cluster
            up = start("db", "up", state_dir=state)
            assert up.stderr.readline() == f"{WAITING}{state} ...\n"
            crashed = cluster.running_pid()
            os.kill(crashed, signal.SIGKILL)
            while cluster.running_pid() is not None:
                time.sleep(0.05)
        result = finish(up)
        assert (result.returncode, result.stdout) == (0, url + "\n"), result.stderr
        assert cluster.running_pid() not in (None, crashed)
    finally:
        cluster.down()
