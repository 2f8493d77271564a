"""The lab's way of running the notebooks: one server and one main database, as `./kit lab` makes them (migrated,
with the demo data), every notebook run after the others, 00 → 09, again, then 09 → 00, with experiments by hand
in between. Each run is nbval in strict mode with the same sanitize file as the per-notebook runs, so each must
show exactly what the committed notebook shows.

The three passes run in file order and share the lab; each is its own pytest run in a subprocess (nbval starts a
kernel per notebook), with `--lab-database-url` so that conftest.py gives the notebooks the lab's database.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from attendance_kit import connect, load_demo_data, migrate
from attendance_kit.connection import url_with_database
from attendance_kit.demo import ENGINES_LECTURE, SAM
from attendance_kit.paths import PROJECT_DIR
from attendance_kit.server import Cluster

NOTEBOOKS = sorted((PROJECT_DIR / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def lab(server) -> Iterator[str]:
    """A lab of its own, as `./kit lab` makes it: an embedded cluster, its main database migrated with the demo
    data. Its own cluster, not the run's server: the lesson databases have fixed names, and another test worker
    may be running the same notebook on a shared server (--database-url)."""
    state = Path(tempfile.mkdtemp(dir=server.scratch))
    state.chmod(0o755)
    cluster = Cluster(state)
    url = cluster.up()
    with connect(url) as conn:
        migrate(conn)
        load_demo_data(conn)
    yield url
    cluster.down()


def run_notebooks(lab_url: str, notebooks: list[Path]) -> None:
    """The notebooks, in this order, under nbval strict (the project's pytest options), against the lab."""
    command = [sys.executable, "-m", "pytest", "-n", "0", "-q", "--keep-duplicates", "-p", "no:randomly",
               f"--lab-database-url={lab_url}", *map(str, notebooks)]
    result = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # Every code cell ran and matched: none skipped, none deselected.
    cells = sum(cell.cell_type == "code" for notebook in notebooks
                for cell in nbformat.read(notebook, as_version=4).cells)
    assert result.stdout.strip().splitlines()[-1].startswith(f"{cells} passed in "), result.stdout[-2000:]


def experiment_by_hand(lab_url: str) -> None:
    """What a newcomer does between runs: the lecture goes live, Sam checks in, channels appear, and a scratch
    table, in the main database and in every lesson database that has the tables."""
    with connect(lab_url) as conn:
        databases = [row[0] for row in conn.execute(
            "select datname from pg_database where datname like 'lesson\\_%' or datname = current_database()")]
    for name in databases:
        with connect(url_with_database(lab_url, name)) as conn:
            conn.execute("create table if not exists public.my_notes (note text)")
            if conn.execute("select to_regclass('public.websocket_channels')").fetchone()[0] is None:
                continue
            conn.execute("update live_sessions set status = 'live' where id = %s", [ENGINES_LECTURE])
            conn.execute("insert into websocket_channels (session_id, channel_name) values (%s, 'presence'), "
                         "(%s, 'chat') on conflict do nothing", [ENGINES_LECTURE, ENGINES_LECTURE])
            conn.execute("insert into attendance_records (session_id, student_id) values (%s, %s) "
                         "on conflict do nothing", [ENGINES_LECTURE, SAM.id])


def test_1_every_notebook_in_order(lab: str) -> None:
    run_notebooks(lab, NOTEBOOKS)


def test_2_again_after_experiments(lab: str) -> None:
    experiment_by_hand(lab)
    run_notebooks(lab, NOTEBOOKS)


def test_3_in_reverse_after_experiments(lab: str) -> None:
    experiment_by_hand(lab)
    run_notebooks(lab, NOTEBOOKS[::-1])


def test_4_the_main_database_holds_only_what_the_user_wrote(lab: str) -> None:
    """No notebook, benchmark or comparison wrote into the lab's main database, and no scratch database is left."""
    with connect(lab) as conn:
        assert conn.execute("select count(*) from live_sessions").fetchone()[0] == 2
        assert conn.execute("select count(*) from auth.users").fetchone()[0] == 7
        assert conn.execute("select count(*) from attendance_records").fetchone()[0] == 1  # Sam's, by hand
        assert conn.execute("select count(*) from websocket_channels").fetchone()[0] == 2  # by hand
        assert conn.execute("select datname from pg_database where datname like 'kit\\_scratch\\_%'").fetchall() == []
