"""Benchmarks (`attendance-kit bench ...`): figures measured in one run on this machine, printed, never asserted."""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from .connection import connect
from .demo import load_demo_data
from .migrations import migrate
from .server import Cluster


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


def render(result: dict[str, Any], output_format: str) -> str:
    if output_format == "json":
        return json.dumps(result)
    width = max(len(key) for key in result)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in result.items())
