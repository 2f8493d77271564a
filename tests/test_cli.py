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
from collections.abc import Iterator
from pathlib import Path

import psycopg

from attendance_kit import cli
from attendance_kit.paths import PROJECT_DIR


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
