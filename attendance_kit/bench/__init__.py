"""Benchmarks (`attendance-kit bench ...`): figures measured side by side in one run, printed, never asserted.

One module per benchmark; each exposes a function returning a JSON-ready dict, which `render` prints.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg import sql

from ..connection import connect, url_with_database


def render(result: dict[str, Any], output_format: str) -> str:
    """The result as JSON, or as an aligned two-column table (nested values shown as JSON)."""
    if output_format == "json":
        return json.dumps(result)
    width = max(len(key) for key in result)
    return "\n".join(
        f"{key:<{width}}  {json.dumps(value) if isinstance(value, (dict, list)) else value}"
        for key, value in result.items()
    )


@contextmanager
def scratch_database(server: str, prefix: str) -> Iterator[str]:
    """The URL of a new, empty database on `server`, dropped afterwards whatever happens."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with connect(server) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield url_with_database(server, name)
    finally:
        with connect(server) as admin:
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
