"""Test set-up for tests/ and notebooks/: one real PostgreSQL server for the run, a fresh database for each
test, and for each notebook a fresh, empty main database (the notebook makes its own lesson database beside it).

The server is a private embedded cluster, or the server at `--database-url` /
$ATTENDANCE_KIT_TEST_DATABASE_URL (e.g. a PostgreSQL 15; needs a role that may create databases and roles).
With `--lab-database-url` the notebooks run against that one main database instead, as in `./kit lab`
(tests/test_lab.py runs them so).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from attendance_kit import KitError, connect, load_demo_data, migrate
from attendance_kit.connection import url_with_database
from attendance_kit.server import Cluster


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--database-url", help="run the database tests on this server instead of an embedded one")
    parser.addoption("--lab-database-url",
                     help="run the notebooks against this main database, one after another, as ./kit lab does")


class DatabaseServer:
    """The run's PostgreSQL server; hands out fresh databases, empty or migrated with the demo data."""

    def __init__(self, config: pytest.Config) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="attendance-kit-tests-"))
        # As root the server runs as `nobody`, which must be able to enter this directory.
        self.scratch.chmod(0o755)
        url = given_server(config)
        self.cluster = None if url else Cluster(self.scratch / "server")
        self.url = url or self.cluster.up()
        # Names carry the process id: xdist's workers may share one server (--database-url).
        self._prefix = f"kit_test_{os.getpid()}"
        self._template = f"{self._prefix}_template"
        self._names = itertools.count(1)
        self._template_ready = False

    def url_for(self, dbname: str) -> str:
        return url_with_database(self.url, dbname)

    def fresh_database(self, migrated: bool) -> str:
        """Create a new database and return its URL."""
        name = f"{self._prefix}_{next(self._names)}"
        if migrated and not self._template_ready:
            # Roles are server-wide: xdist's workers sharing a server (--database-url) migrate one at a time.
            with connect(self.url) as lock:
                lock.execute("select pg_advisory_lock(4736002)")
                self._create(self._template, template="template0")
                with connect(self.url_for(self._template)) as conn:
                    migrate(conn)
                    load_demo_data(conn)
            self._template_ready = True
        self._create(name, template=self._template if migrated else "template0")
        return self.url_for(name)

    def _create(self, name: str, template: str) -> None:
        with connect(self.url) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("create database {} template {}").format(
                sql.Identifier(name), sql.Identifier(template)))

    def close(self) -> None:
        with connect(self.url) as conn:
            names = conn.execute("select datname from pg_database where starts_with(datname, %s)",
                                 [self._prefix + "_"]).fetchall()
            for (name,) in names:
                conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
        if self.cluster:
            self.cluster.down()
        shutil.rmtree(self.scratch, ignore_errors=True)


def given_server(config: pytest.Config) -> str | None:
    """The server the user gave for the run, if any (else each process runs an embedded one)."""
    return config.getoption("--database-url") or os.environ.get("ATTENDANCE_KIT_TEST_DATABASE_URL")


def pytest_configure(config: pytest.Config) -> None:
    """A server given for the run that cannot be reached ends the run at once, in one line, rather than in an error
    per test. Checked once, before xdist starts its workers (which skip the check)."""
    if hasattr(config, "workerinput"):
        return
    for option, url in (("--database-url (and $ATTENDANCE_KIT_TEST_DATABASE_URL)", given_server(config)),
                        ("--lab-database-url", config.getoption("--lab-database-url"))):
        if url:
            try:
                connect(url).close()
            except KitError as error:
                pytest.exit(f"the tests' database server cannot be used: {error}; or leave out {option} to run "
                            "the tests on an embedded server", returncode=1)


_server: DatabaseServer | None = None


def database_server(config: pytest.Config) -> DatabaseServer:
    global _server
    if _server is None:
        _server = DatabaseServer(config)
    return _server


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _server is not None:
        _server.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first, so that the workers finish together (xdist keeps this order: --no-loadscope-reorder): the
    lab's sequence (tests/test_lab.py, one worker, ~24 notebook runs in order), then the notebooks, then the rest."""
    def rank(item: pytest.Item) -> int:
        return 0 if item.path.name == "test_lab.py" else 1 if item.path.suffix == ".ipynb" else 2

    items.sort(key=rank)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before a notebook's kernel starts (with its first cell), point it at its main database: a fresh, empty one,
    or the lab's."""
    notebook = item.parent
    if notebook.path.suffix == ".ipynb" and not getattr(notebook, "_kit_database", None):
        lab = item.config.getoption("--lab-database-url")
        notebook._kit_database = lab or database_server(item.config).fresh_database(migrated=False)
        os.environ["ATTENDANCE_KIT_DATABASE_URL"] = notebook._kit_database
        os.environ["PLOOMBER_STATS_ENABLED"] = "false"


@pytest.fixture(scope="session")
def server(request: pytest.FixtureRequest) -> DatabaseServer:
    return database_server(request.config)


@pytest.fixture
def empty_db(server: DatabaseServer) -> str:
    """URL of a fresh database with nothing applied."""
    return server.fresh_database(migrated=False)


@pytest.fixture
def db_url(server: DatabaseServer) -> str:
    """URL of a fresh database with every migration and the demo data."""
    return server.fresh_database(migrated=True)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with connect(db_url) as connection:
        yield connection


@pytest.fixture
def scratch_dir(server: DatabaseServer) -> Path:
    """A directory the server account can enter, for clusters of a test's own."""
    path = Path(tempfile.mkdtemp(dir=server.scratch))
    path.chmod(0o755)
    return path
