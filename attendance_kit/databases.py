"""Databases the kit makes for itself on a server: each notebook's lesson database, the templates they are copied
from, and scratch databases for benchmarks.

A newcomer runs the notebooks in `./kit lab` in any order, again and again, and experiments by hand in between.
So that every run tells the committed story, a step notebook never works in the lab's main database: it starts
by dropping and re-creating a database of its own (`lesson_03`), copied from a template that holds the steps
before it and the demo data. A template is built once for each version of what it is made from (the sql/ files,
seed.sql, the term generator), so a copy takes tens of milliseconds. The main database keeps the demo data for
free exploration, and nothing a notebook does reaches another notebook's database.

Benchmarks and live comparisons write their generated load into a scratch database, dropped when they end,
interrupted or not.
"""

from __future__ import annotations

import hashlib
import inspect
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from . import term
from .connection import connect, database_url, redacted, sql_engine, url_with_database
from .demo import DEMO_DATA_FILE, load_demo_data
from .errors import KitError, one_line
from .migrations import migrate, migrations_in

if TYPE_CHECKING:
    import sqlalchemy

TEMPLATE_PREFIX = "kit_template_"
SCRATCH_PREFIX = "kit_scratch_"
# One builder of templates and lesson databases at a time per server (parallel test workers share templates).
LOCK_KEY = 4_736_003
MARK = "made by attendance-kit: dropped and made afresh at each run"  # the comment on every database it makes


@dataclass(frozen=True)
class Contents:
    """What a lesson database holds before its notebook runs: sql/ through `through` ("all": every file; None:
    nothing), then optionally the demo data (sql/seed.sql) and a term of sessions (`load_demo_term`)."""

    through: str | None = None
    demo_data: bool = False
    demo_term: bool = False

    def describe(self) -> str:
        if self.through is None:
            return "empty"
        what = ["sql/ " + ("migrated" if self.through == "all" else f"through {self.through}")]
        if self.demo_data or self.demo_term:
            what.append("the demo data")
        if self.demo_term:
            what.append("a term of sessions")
        return ", ".join(what[:-1]) + " and " + what[-1] if len(what) > 1 else what[0]

    def template_name(self) -> str | None:
        """The template's name: what it holds, and a hash of the files it is made from (a change makes a new one)."""
        if self.through is None:
            return None
        migrations = migrations_in()
        names = [m.name for m in migrations]
        if self.through != "all" and self.through not in names:
            raise KitError(f"no migration named {self.through}: the files are {', '.join(names)}")
        included = migrations if self.through == "all" else migrations[: names.index(self.through) + 1]
        digest = hashlib.sha256()
        for migration in included:
            digest.update(migration.checksum.encode())
        if self.demo_data or self.demo_term:
            digest.update(DEMO_DATA_FILE.read_bytes())
        if self.demo_term:
            digest.update(inspect.getsource(term).encode())
        step = "all" if self.through == "all" else self.through[:3]
        kind = "term" if self.demo_term else "demo" if self.demo_data else "schema"
        return f"{TEMPLATE_PREFIX}{step}_{kind}_{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class Lesson:
    """A notebook's own database, made afresh."""

    name: str
    url: str
    contents: Contents

    def connect(self) -> psycopg.Connection:
        return connect(self.url)

    def sql_engine(self) -> sqlalchemy.engine.Engine:
        """For the `%sql` magic: `%sql engine`."""
        return sql_engine(self.url)

    def __str__(self) -> str:
        return (f"{self.name}: this notebook's own database, made afresh ({self.contents.describe()}); "
                f"run the notebook again to start over.\n{redacted(self.url)}")


def start_lesson(name: str, through: str | None = None, *, demo_data: bool = False, demo_term: bool = False,
                 server_url: str | None = None) -> Lesson:
    """Drop the database `name` if it exists and make it afresh, holding sql/ through `through` ("all" for every
    file, None for nothing) and, if asked, the demo data and a term of sessions. On the server of `server_url`,
    else of $ATTENDANCE_KIT_DATABASE_URL, else the kit's cluster. Connections to the old one are closed."""
    contents = Contents(through, demo_data, demo_term)
    server = database_url(server_url)
    _make(server, name, contents)
    return Lesson(name, url_with_database(server, name), contents)


@contextmanager
def scratch_database(server_url: str | None = None, through: str | None = None, *,
                     demo_data: bool = False) -> Iterator[str]:
    """The URL of a new database (empty, or holding sql/ through `through` and the demo data), dropped afterwards
    whatever happens, an interrupted notebook cell included."""
    server = database_url(server_url)
    name = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:12]}"
    _make(server, name, Contents(through, demo_data))
    try:
        yield url_with_database(server, name)
    finally:
        with connect(server) as admin:
            _drop(admin, name)


def _make(server: str, name: str, contents: Contents) -> None:
    """(Re)create `name` as a copy of the template holding `contents`, building the template first if needed."""
    with _admin(server) as admin:
        template = contents.template_name()
        if template is not None:
            _build_template(admin, server, template, contents)
        _recreate(admin, name, template or "template0")


@contextmanager
def _admin(server: str) -> Iterator[psycopg.Connection]:
    """A connection to the server holding the kit's lock on templates. Advisory locks are per database, so the lock
    is taken in `postgres` (every caller meets there) when it exists, else in the database given."""
    try:
        admin_conn = connect(url_with_database(server, "postgres"))
    except KitError:
        admin_conn = connect(server)
    with admin_conn as admin:
        admin.execute("select pg_advisory_lock(%s)", [LOCK_KEY])
        yield admin


def _build_template(admin: psycopg.Connection, server: str, template: str, contents: Contents) -> None:
    """Build the template once; a half-built one (an interrupted build) is never used: it is built under another
    name and renamed when complete. Older versions of the same template are dropped."""
    if _exists(admin, template):
        return
    kind = template.rsplit("_", 1)[0] + "_"
    stale = admin.execute("select datname from pg_database where starts_with(datname, %s) "
                          "and shobj_description(oid, 'pg_database') = %s", [kind, MARK]).fetchall()
    for (name,) in stale:
        _drop(admin, name)
    building = template + "_building"
    _recreate(admin, building, "template0")
    with connect(url_with_database(server, building)) as conn:
        migrate(conn, through=None if contents.through == "all" else contents.through)
        if contents.demo_data or contents.demo_term:
            load_demo_data(conn)
        if contents.demo_term:
            term.load_demo_term(conn)
    admin.execute(sql.SQL("alter database {} rename to {}").format(sql.Identifier(building), sql.Identifier(template)))


def _recreate(admin: psycopg.Connection, name: str, template: str) -> None:
    """Drop `name` (only if the kit made it: never a database of the user's that happens to share the name) and
    create it again from `template`, marked as the kit's."""
    if _exists(admin, name) and _comment(admin, name) != MARK:
        raise KitError(f"database {name} exists on this server but was not made by attendance-kit, which drops and "
                       f"re-creates {name}: rename yours, or drop it if it is an old lesson of the kit's")
    try:
        _drop(admin, name)
        admin.execute(sql.SQL("create database {} template {}").format(sql.Identifier(name), sql.Identifier(template)))
        admin.execute(sql.SQL("comment on database {} is {}").format(sql.Identifier(name), sql.Literal(MARK)))
    except psycopg.errors.InsufficientPrivilege as error:
        raise KitError(f"cannot make database {name} afresh: {one_line(error)} (the lessons and benchmarks need a "
                       "role that may create databases, e.g. the kit's cluster's or Supabase's postgres)") from None


def _drop(admin: psycopg.Connection, name: str) -> None:
    # DROP ... WITH (FORCE) refuses a database with an active replication slot (a change feed of the notebook
    # being run again in the same kernel): end the connections that hold one first.
    admin.execute("select pg_terminate_backend(active_pid) from pg_replication_slots "
                  "where database = %s and active_pid is not null", [name])
    admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def _comment(admin: psycopg.Connection, name: str) -> str | None:
    return admin.execute("select shobj_description(oid, 'pg_database') from pg_database where datname = %s",
                         [name]).fetchone()[0]


def _exists(admin: psycopg.Connection, name: str) -> bool:
    return admin.execute("select exists (select from pg_database where datname = %s)", [name]).fetchone()[0]
