"""Connections, and `as_user`: run statements as a persona the way Supabase's API does.

Supabase's API (PostgREST) runs each request in a transaction that switches to the JWT's role with
`SET LOCAL ROLE` and exposes the claims as the `request.jwt.claims` setting, which `auth.uid()`,
`auth.role()` and `auth.jwt()` read. `as_user` does exactly that on a psycopg connection.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from .errors import KitError, one_line

if TYPE_CHECKING:  # sqlalchemy is imported where it is used: the command line starts faster without it
    import sqlalchemy

URL_VARIABLE = "ATTENDANCE_KIT_DATABASE_URL"
MINIMUM_SERVER_VERSION = 150000
API_ROLES = ("anon", "authenticated", "service_role")
# A server that stops answering (a laptop's sleep, a network gone) fails a connect after 10 s, and a connection
# whose sent data goes unacknowledged after 30 s, not after the system's TCP timeout of minutes; a URL's own
# values win.
LIVENESS = {"connect_timeout": "10", "tcp_user_timeout": "30000", "keepalives_idle": "30"}


def database_url(url: str | None = None, *, start: bool = True) -> str:
    """The database to use: `url`, else $ATTENDANCE_KIT_DATABASE_URL, else the kit's cluster, which is started if
    it is stopped (saying so on stderr: it keeps running after the caller ends, as after `./kit db up`).

    The kit's cluster is taken as the command that holds its lock leaves it (e.g. `./kit lab` still migrating it
    in another terminal): this waits for that command to finish first. With `start=False` (reconnecting to it) a
    cluster that is stopped, or that another command is changing, is a KitError at once: try again later.
    """
    if url:
        return url
    if os.environ.get(URL_VARIABLE):
        return os.environ[URL_VARIABLE]
    from .server import Cluster

    cluster = Cluster()
    if not start:
        if cluster.lock.held_elsewhere() or cluster.running_pid() is None:
            raise KitError("the kit's cluster is not running, or another kit command is changing it")
        return cluster.url
    with cluster.lock:
        if cluster.running_pid() is not None:
            return cluster.url
        existed = (cluster.data_dir / "PG_VERSION").exists()
        url = cluster.up()
    started = ("started the kit's cluster (it was stopped)" if existed
               else f"made and started the kit's cluster in {cluster.data_dir}")
    print(f"note: {started}; `./kit db down` stops it", file=sys.stderr)
    return url


def url_with_database(url: str, dbname: str) -> str:
    """The same server and credentials, another database (a URL, or a key=value string)."""
    if "://" not in url:
        return psycopg.conninfo.make_conninfo(url, dbname=dbname)
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path="/" + dbname))


def sql_engine(url: str | None = None) -> sqlalchemy.engine.Engine:
    """A SQLAlchemy engine (psycopg 3 driver) on the same database, for the `%sql` magic: `%sql engine`."""
    import sqlalchemy

    params = psycopg.conninfo.conninfo_to_dict(database_url(url))
    return sqlalchemy.create_engine(sqlalchemy.engine.URL.create(
        "postgresql+psycopg", username=params.pop("user", None), password=params.pop("password", None),
        host=params.pop("host", None), port=params.pop("port", None), database=params.pop("dbname", None),
        query={key: str(value) for key, value in params.items()},
    ))


def connect(url: str | None = None, **kwargs: Any) -> psycopg.Connection:
    """An autocommit connection (transactions are explicit: `with conn.transaction()` or `as_user`)."""
    target = database_url(url)
    try:
        given = psycopg.conninfo.conninfo_to_dict(target)
        liveness = {key: value for key, value in LIVENESS.items() if key not in given}
        conn = psycopg.connect(target, autocommit=True, **{**liveness, **kwargs})
    except psycopg.OperationalError as error:
        raise KitError(f"cannot connect to {redacted(target)}: {one_line(error)} "
                       f"(check the URL, e.g. postgresql://user:password@host:5432/dbname)") from None
    except psycopg.ProgrammingError as error:
        raise KitError(f"not a valid database URL {redacted(target)!r}: {one_line(error)} "
                       "(expected postgresql://user:password@host:5432/dbname)") from None
    check_server_version(conn)
    return conn


def check_server_version(conn: psycopg.Connection) -> None:
    if conn.info.server_version < MINIMUM_SERVER_VERSION:
        raise KitError(f"the server runs PostgreSQL {conn.info.server_version // 10000}; "
                       "the kit needs PostgreSQL 15 or newer")


def require_logical_decoding(conn: psycopg.Connection) -> None:
    """Realtime (the draft's steps 4 and 6) reads the publication through logical decoding: wal_level=logical."""
    level = conn.execute("select current_setting('wal_level')").fetchone()[0]
    if level != "logical":
        raise KitError(f"wal_level is {level!r} but realtime needs 'logical': run "
                       "`ALTER SYSTEM SET wal_level = logical` as a superuser and restart the server")


def supabase_claims(role: str, user_id: uuid.UUID | None = None, email: str | None = None) -> dict[str, Any]:
    """JWT claims shaped like those Supabase Auth issues."""
    if user_id is None:
        return {"role": role, "iss": "supabase", "is_anonymous": role == "anon"}
    return {
        "sub": str(user_id), "role": role, "aud": "authenticated", "email": email or "",
        "iss": "supabase", "aal": "aal1", "is_anonymous": False,
        "app_metadata": {"provider": "email", "providers": ["email"]}, "user_metadata": {},
    }


def resolve_user(conn: psycopg.Connection, who: str | uuid.UUID) -> tuple[str, dict[str, Any]]:
    """The role and claims for `who`: 'anon', 'service_role', a user's UUID, or a user's email."""
    if isinstance(who, str) and who in ("anon", "service_role"):
        return who, supabase_claims(who)
    column = "email" if isinstance(who, str) and "@" in who else "id"
    key = str(who)
    if column == "id":
        try:
            key = str(uuid.UUID(key))
        except ValueError:
            raise KitError(f"{who!r} is not a user: give a UUID, an email, 'anon' or 'service_role'") from None
    row = conn.execute(
        sql.SQL("select id, email from auth.users where {} = %s").format(sql.Identifier(column)), [key]
    ).fetchone()
    if row is None:
        raise KitError(f"no user with {column} {key} in auth.users: load the personas with {{command}}",
                       command="migrate --demo-data")
    return "authenticated", supabase_claims("authenticated", row[0], row[1])


@contextmanager
def as_user(
    conn: psycopg.Connection, who: str | uuid.UUID, *, rollback: bool = False
) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
    """A transaction in which statements run as `who`, as Supabase's API would run them.

    Yields a cursor returning dict rows. Commits at the end (like an API request) unless `rollback`
    is true or the block raises. Needs a connection outside any transaction, since the role switch
    lasts until the transaction ends.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise KitError("as_user needs a connection that is not inside a transaction")
    role, claims = resolve_user(conn, who)
    with conn.transaction(force_rollback=rollback), conn.cursor(row_factory=dict_row) as cur:
        become(cur, role, claims)
        yield cur


def become(cur: psycopg.Cursor, role: str, claims: dict[str, Any]) -> None:
    """Inside a transaction: until it (or the enclosing savepoint) ends, run as `role` with these claims."""
    cur.execute("select set_config('request.jwt.claims', %s, true)", [json.dumps(claims)])
    cur.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))


def redacted(url: str) -> str:
    """The URL (or key=value string) without its password, for messages."""
    url = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]+)", r"\1***", url)
