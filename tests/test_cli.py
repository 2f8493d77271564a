"""The attendance-kit command as a user runs it: results on stdout, one-line errors, exit codes."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from attendance_kit import cli
from attendance_kit.paths import PROJECT_DIR
from attendance_kit.verification import Contract


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


def test_a_reader_that_goes_away_ends_the_command_quietly(db_url: str) -> None:
    """`./kit realtime token ... | head -c0`, `./kit listen ... | head`: no BrokenPipeError traceback."""
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before anything is written
    try:
        result = subprocess.run([sys.executable, "-m", "attendance_kit.cli", "realtime", "token", "--as",
                                 "sam@attendance-kit.test", "--database-url", db_url],
                                stdout=writer, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(writer)
    assert (result.returncode, result.stderr) == (0, "")


def test_a_wrong_url_is_one_line_without_the_password() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = kit("migrate", "--database-url", f"postgresql://postgres:s3cret@127.0.0.1:{port}/x")
    assert_one_line_error(result, "cannot connect to postgresql://postgres:***@127.0.0.1", "check the URL")
    assert "s3cret" not in result.stderr
    assert_one_line_error(kit("migrate", "--database-url", "postgresql://h/db?bogus_option=1"),
                          "not a valid database URL")


def test_db_up_url_reset_down(scratch_dir: Path) -> None:
    state = scratch_dir / "state"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    up = kit("db", "up", "--port", str(port), state_dir=state)
    assert up.returncode == 0, up.stderr
    url = up.stdout.strip()
    assert url.startswith("postgresql://postgres:") and f"127.0.0.1:{port}/" in url
    assert "demo data loaded" in up.stderr and f"port {port} is now this clone's" in up.stderr
    assert kit("db", "url", state_dir=state).stdout.strip() == url
    again = kit("db", "up", state_dir=state)
    assert again.stdout.strip() == url and "nothing to apply" in again.stderr

    # sql/ changed under the cluster (as when migrations are folded): one line and the way out, nothing dropped.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("insert into attendance_kit.applied_migrations (name, checksum) values ('009_gone.sql', 'x')")
        conn.execute("create table public.my_notes (note text)")
    assert_one_line_error(kit("db", "up", state_dir=state), "sql/009_gone.sql no longer exists", "`./kit db reset`")
    reset = kit("db", "reset", state_dir=state)
    assert reset.returncode == 0, reset.stderr
    assert f"127.0.0.1:{port}/" in reset.stdout and "started over" in reset.stderr
    with psycopg.connect(reset.stdout.strip()) as conn:
        assert conn.execute("select to_regclass('public.my_notes')").fetchone()[0] is None
        assert conn.execute("select count(*) from auth.users").fetchone()[0] == 7

    assert kit("db", "down", state_dir=state).returncode == 0
    assert_one_line_error(kit("db", "url", state_dir=state), "not running", "`./kit db up`")


def test_db_up_on_a_taken_port_is_one_line(scratch_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = kit("db", "up", "--port", str(port), state_dir=scratch_dir / "state")
    assert_one_line_error(result, f"port {port} on 127.0.0.1 is in use", "--port")


@contextmanager
def port_taken(port: int = 0) -> Iterator[int]:
    """A port of 127.0.0.1 (`port`, else a free one) that another program listens on, for the block."""
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # even a port the cluster just let go
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        yield squatter.getsockname()[1]


def server_account_may_bind(port: int) -> bool:
    """Whether the server's account may listen on `port`: as root the server runs as `nobody`, so below
    net.ipv4.ip_unprivileged_port_start (1024 by default) it may not, whoever runs the kit."""
    first_unprivileged = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    return port >= first_unprivileged


def test_a_port_the_cluster_cannot_listen_on_is_not_kept_and_reset_drops_nothing_first(scratch_dir: Path) -> None:
    state = scratch_dir / "state"
    url = kit("db", "up", state_dir=state).stdout.strip()
    port = urllib.parse.urlsplit(url).port
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create table public.my_notes (note text)")
        assert kit("db", "down", state_dir=state).returncode == 0
        with port_taken() as taken:
            assert_one_line_error(kit("db", "up", "--port", str(taken), state_dir=state),
                                  f"port {taken} on 127.0.0.1 is in use", f"start it on its port {port} with "
                                  "`./kit db up`", "`./kit db up --port ")
        # As root the server, run as `nobody`, is refused port 1 and its log says why; otherwise the kit's own check.
        if not server_account_may_bind(1):
            assert_one_line_error(kit("db", "up", "--port", "1", state_dir=state),
                                  "cannot listen on port 1 of 127.0.0.1", "Permission denied",
                                  f"start it on its port {port} with `./kit db up`")
        # Another program took the port the cluster keeps: a reset, which cannot start it, drops nothing.
        with port_taken(port):
            assert_one_line_error(kit("db", "reset", state_dir=state), f"port {port} on 127.0.0.1 is in use")
        again = kit("db", "up", state_dir=state)
        assert (again.returncode, again.stdout.strip()) == (0, url), again.stderr
        with psycopg.connect(url) as conn:
            assert conn.execute("select to_regclass('public.my_notes')").fetchone()[0] == "my_notes"
    finally:
        kit("db", "down", state_dir=state)


def test_a_command_that_needs_the_stopped_cluster_starts_it_and_says_so(scratch_dir: Path) -> None:
    state = scratch_dir / "state"
    url = kit("db", "up", state_dir=state).stdout.strip()
    try:
        for command in (("verify", "--format", "json"), ("listen", "--as", "anon", "--seconds", "0.1")):
            assert kit("db", "down", state_dir=state).stderr == "stopped\n"
            result = kit(*command, state_dir=state)
            assert result.returncode == 0, result.stderr
            assert "note: started the kit's cluster (it was stopped); `./kit db down` stops it" in result.stderr
            assert kit("db", "url", state_dir=state).stdout.strip() == url
            again = kit(*command, state_dir=state)
            assert again.returncode == 0 and "note:" not in again.stderr
    finally:
        kit("db", "down", state_dir=state)


def test_export_to_a_place_it_cannot_write_is_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory\n")
    assert_one_line_error(kit("export", "supabase", str(a_file)), f"{a_file} is a file, not a directory",
                          "give a directory you may write to")
    assert_one_line_error(kit("export", "supabase", str(a_file / "project")), f"{a_file} is a file")
    for unwritable in ("/proc/nonexistent/x", "/proc/sys/x"):  # not even root may write there
        assert_one_line_error(kit("export", "supabase", unwritable), f"cannot write the Supabase project in "
                              f"{unwritable}: ", "give a directory you may write to")


def test_verify_prints_the_contract_as_a_table_marking_what_is_not_as_it_says(db_url: str) -> None:
    clean = kit("verify", "--database-url", db_url)
    assert clean.returncode == 0, clean.stderr
    header, _, *rows, verdict = clean.stdout.strip().splitlines()
    assert header.split() == ["persona", "teacher", "other_teacher", "student", "outside_student", "anon",
                              "service_role"]
    assert rows[0].split() == ["profiles", "select", "4", "rows", "3", "rows", "1", "row", "1", "row", "denied",
                               "8", "rows"]
    contract = Contract.load()
    assert len(rows) == 4 * len(contract.tables) + 4 * len(contract.channels) and "!" not in clean.stdout
    assert "checks as the contract says" in verdict
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("create policy everyone on public.courses for select to authenticated using (true)")
    loosened = kit("verify", "--database-url", db_url)
    assert loosened.returncode == 1
    courses = next(row for row in loosened.stdout.splitlines() if row.startswith("courses "))
    assert courses.split()[:5] == ["courses", "select", "3", "rows", "!"]


def test_realtime_serve_says_how_to_connect_in_the_kit_s_words(db_url: str) -> None:
    served = subprocess.Popen([sys.executable, "-m", "attendance_kit.cli", "realtime", "serve", "--port",
                               str(free_port()), "--database-url", db_url], stderr=subprocess.PIPE, text=True)
    try:
        said = [served.stderr.readline() for _ in range(4)]
    finally:
        served.terminate()
        served.wait(10)
    assert said[-1] == "other personas: `./kit realtime token --as EMAIL`; Ctrl-C stops the gateway\n", said


def test_tests_on_a_server_that_is_not_running_stop_at_once_in_one_line(tmp_path: Path) -> None:
    """`./kit test --database-url <a server that is not running>`: pytest as ./kit runs it, with the kit's settings
    (xdist's workers among them) and conftest.py, on a file of database tests."""
    tests = tmp_path / "test_on_the_server.py"
    tests.write_text("".join(f"def test_{n}(conn):\n    conn.execute('select 1')\n\n\n" for n in range(20)))
    dead = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/postgres"
    pytest = [sys.executable, "-m", "pytest", "-c", str(PROJECT_DIR / "pyproject.toml"), "-p", "conftest"]
    result = subprocess.run([*pytest, str(tests), "--database-url", dead], cwd=PROJECT_DIR, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    (line,) = (result.stdout + result.stderr).strip().splitlines()
    assert "the tests' database server cannot be used: cannot connect to postgresql://postgres:***@127.0.0.1" in line
    assert "leave out --database-url" in line and "s3cret" not in line


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_bench_startup_reports_its_figures() -> None:
    result = kit("bench", "startup", "--runs", "1", "--format", "json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert set(figures) == {"runs", "accepting_connections_s", "migrated_with_demo_data_s", "target_s"}
    assert figures["runs"] == 1 and 0 < figures["accepting_connections_s"] <= figures["migrated_with_demo_data_s"]


def shown_commands() -> list[str]:
    """Every `./kit ...` command the README and the pages in docs/ show: in code spans (the README's command
    table's synopses among them) and on the lines of their code blocks."""
    pages = [PROJECT_DIR / "README.md", *sorted((PROJECT_DIR / "docs").glob("*.md"))]
    text = "\n".join(page.read_text(encoding="utf-8") for page in pages)
    spans = re.findall(r"`(\./kit [^`]+)`", text)
    block_lines = [line.strip() for block in re.findall(r"```sh\n(.*?)```", text, re.S)
                   for line in block.splitlines() if line.strip().startswith("./kit ")]
    return spans + [line.split("  #")[0].strip() for line in block_lines]


def test_every_command_the_docs_show_is_one_the_kit_takes() -> None:
    commands = shown_commands()
    assert {"./kit lab", "./kit test", "./kit db reset", "./kit docs", "./kit verify"} <= set(commands)
    for command in commands:
        # A synopsis: drop [optional] parts, give each PLACEHOLDER a value.
        concrete = re.sub(r"\[[^\]]*\](\.\.\.)?", "", command.replace("\\|", "|"))
        words = shlex.split(concrete)[1:]
        if words[0] == "test" or words[0].isupper():  # ./kit's own (pytest), or `./kit COMMAND` itself
            continue
        words = [("1" if re.fullmatch(r"[A-Z]+", word) else word) for word in words]
        try:
            args, extra = cli.parser().parse_known_args(words)
        except SystemExit:
            raise AssertionError(f"the docs show {command!r}, which attendance-kit does not take") from None
        assert not extra or args.run is cli.lab, f"{command!r}: attendance-kit does not take {extra}"


def test_the_kit_script_runs_any_command_from_its_environment(tmp_path: Path) -> None:
    """`./kit COMMAND` is `attendance-kit COMMAND` from the kit's virtual environment (here: this one)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / "bin" / "attendance-kit").write_text(f"#!/bin/sh\nexec {sys.executable} -m attendance_kit.cli \"$@\"\n")
    (venv / "bin" / "attendance-kit").chmod(0o755)
    (venv / ".installed").touch()
    env = dict(os.environ, ATTENDANCE_KIT_VENV=str(venv), ATTENDANCE_KIT_STATE_DIR=str(tmp_path / "state"))
    result = subprocess.run([str(PROJECT_DIR / "kit"), "db", "url"], capture_output=True, text=True, env=env)
    assert_one_line_error(result, "not running", "`./kit db up`")
    usage = subprocess.run([str(PROJECT_DIR / "kit")], capture_output=True, text=True, env=env)
    assert usage.returncode == 2 and "./kit COMMAND" in usage.stderr


def cli_commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[tuple[str, str | None]]:
    """Every command of the CLI, as the words that name it, with its help text."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                nested = list(cli_commands(sub, (*words, name)))
                yield from nested or [(" ".join((*words, name)), helps[name])]


def test_every_command_is_in_the_readmes_table_and_has_help() -> None:
    commands = list(cli_commands(cli.parser()))
    assert len(commands) >= 12
    table = [line for line in (PROJECT_DIR / "README.md").read_text(encoding="utf-8").splitlines()
             if line.startswith("| `./kit ")]
    for command, help_text in commands:
        assert help_text, f"`attendance-kit {command}` has no --help text"
        assert any(row.startswith(f"| `./kit {command}") for row in table), f"`./kit {command}` is not in the README"
