"""`attendance-kit bench startup`: how long a new embedded cluster takes to accept connections and to migrate."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ..connection import connect
from ..demo import load_demo_data
from ..migrations import migrate
from ..server import Cluster


def startup(runs: int = 3) -> dict[str, Any]:
    """Seconds from no cluster at all to accepting connections, then to migrated with demo data."""
    to_accepting, to_migrated = [], []
    for _ in range(runs):
        scratch = Path(tempfile.mkdtemp(prefix="attendance-kit-bench-"))
        scratch.chmod(0o755)  # as root the server account must be able to enter it
        cluster = Cluster(scratch / "state")
        try:
            started = time.perf_counter()
            url = cluster.up()
            with connect(url) as conn:
                conn.execute("select 1")
                to_accepting.append(time.perf_counter() - started)
                migrate(conn)
                load_demo_data(conn)
                to_migrated.append(time.perf_counter() - started)
        finally:
            cluster.down()
            shutil.rmtree(scratch, ignore_errors=True)
    return {
        "runs": runs,
        "accepting_connections_s": round(statistics.median(to_accepting), 3),
        "migrated_with_demo_data_s": round(statistics.median(to_migrated), 3),
        "target_s": 2.0,
    }
