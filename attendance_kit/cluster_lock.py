"""One kit command at a time changes a cluster: an exclusive `flock` on the file `lock` in its state directory.

The kernel lets go of an flock when the process holding it ends, however it ends (kill -9 too), so the lock is
never stale and needs no pid of its own. The file is the kit's, not the server account's: as root the server runs
as `nobody`, which never opens it.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

from .errors import KitError

SAY_WAITING_AFTER = 1.0  # seconds: a wait shorter than this goes unmentioned


class ClusterLock:
    """The lock of one state directory, held for a `with` block.

    Reentrant: a `with` inside a `with` of the same object holds it once (`db up` holds it around the start it
    asks the cluster for). Two objects for one directory exclude each other, in one process as in two, so each
    thread uses an object of its own.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / "lock"
        self._fd: int | None = None
        self._depth = 0

    def __enter__(self) -> ClusterLock:
        if self._depth == 0:
            self._fd = self._acquire()
        self._depth += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            os.close(self._fd)  # closing the file lets go of the lock
            self._fd = None

    def held_elsewhere(self) -> bool:
        """Whether another command holds the lock now (a glance: it may be taken the moment after)."""
        if self._depth:
            return False
        fd = self._open()
        try:
            return not _try_lock(fd)
        finally:
            os.close(fd)  # and with it the lock, if this took it

    def _acquire(self) -> int:
        """Wait for the lock (saying so on stderr once the wait is noticeable) and return the file that holds it."""
        fd = self._open()
        try:
            deadline = time.monotonic() + SAY_WAITING_AFTER
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    print(f"waiting for another kit command to finish with the cluster in {self.state_dir} ...",
                          file=sys.stderr, flush=True)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    break
                time.sleep(0.05)
        except BaseException:  # e.g. Ctrl-C while waiting
            os.close(fd)
            raise
        return fd

    def _open(self) -> int:
        # Read-only suffices for flock, so a lock file another user made (0644) still serves.
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except PermissionError as error:
            raise KitError(f"cannot lock the kit's cluster in {self.state_dir}: {error.strerror}: run the kit as "
                           "the user who made it, or set ATTENDANCE_KIT_STATE_DIR to a directory of your own") from None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
