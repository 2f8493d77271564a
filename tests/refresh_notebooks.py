"""Re-execute notebooks in place, each on a fresh empty database, so the outputs nbval compares are current.

    python tests/refresh_notebooks.py                 # every notebook
    python tests/refresh_notebooks.py notebooks/00_setup.ipynb

Run it after changing a notebook or what it shows, then review the diff and commit the outputs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbclient
import nbformat
from psycopg import sql

from attendance_kit import connect
from attendance_kit.connection import url_with_database
from attendance_kit.paths import PROJECT_DIR
from attendance_kit.server import Cluster

SCRATCH_DATABASE = "kit_notebook_refresh"


def fresh_database(server_url: str) -> str:
    with connect(server_url) as conn:
        name = sql.Identifier(SCRATCH_DATABASE)
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(name))
        conn.execute(sql.SQL("create database {} template template0").format(name))
    return url_with_database(server_url, SCRATCH_DATABASE)


def refresh(path: Path, server_url: str) -> None:
    os.environ["ATTENDANCE_KIT_DATABASE_URL"] = fresh_database(server_url)
    os.environ["PLOOMBER_STATS_ENABLED"] = "false"
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(notebook, path)
    print(f"refreshed {path.relative_to(PROJECT_DIR)}")


def main(paths: list[str]) -> None:
    server_url = Cluster().up()
    notebooks = [Path(p).resolve() for p in paths] or sorted((PROJECT_DIR / "notebooks").glob("*.ipynb"))
    for path in notebooks:
        refresh(path, server_url)


if __name__ == "__main__":
    main(sys.argv[1:])
