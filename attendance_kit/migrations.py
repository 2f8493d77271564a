"""Migrations: the ordered plain-SQL files in `sql/`, applied once each and recorded in a ledger.

Each file runs in its own transaction and is recorded with the SHA-256 of its SQL; a file already applied is
skipped. A database whose ledger does not match the files (an applied file's SQL changed, or it no longer
exists) is refused before anything runs, by name, with the way out. The checksum ignores comment-only and blank
lines, so a comment can be corrected in an applied file; ledgers written before that recorded the whole text's
checksum, and such a row is accepted (and rewritten) when the file's SQL is as it was. The files hold plain SQL
only, so `psql -f` or the Supabase CLI can run them too.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from .errors import KitError, one_line
from .paths import SQL_DIR

MIGRATION_NAME = re.compile(r"^\d{3}_[a-z0-9_]+\.sql$")
LEDGER_DDL = """
create schema if not exists attendance_kit;
create table if not exists attendance_kit.applied_migrations (
    name text primary key,
    checksum text not null,
    applied_at timestamptz not null default now()
);
revoke all on schema attendance_kit from public;
"""
# One runner at a time per database: two concurrent `migrate` calls must not apply a file twice.
LOCK_KEY = 4_736_001
# Whole-text checksums that ledgers recorded (before the checksum ignored comments) for earlier texts, accepted
# because today's text does nothing more where the earlier one ran: the text of sql/ at commit 67cf4b8, since changed
# in comments only (002-006), or in one statement that now skips what exists already (001: auth.users created only
# where missing, as a Supabase project's `postgres` may not create in schema auth).
EARLIER_CHECKSUMS = {
    "001_supabase_auth_shim.sql": "ec35676c59dde47fe165f8f5d93ecdc8684d7c503b4f7199f70dc24bccc3adf8",
    "002_base_schema.sql": "3889782a14c23909f45a8e1e14c09651b27e2c1fb95ada92ea4b0e816162bc33",
    "003_tables_and_indexes.sql": "4e19670e7ea6aa33957b8225aa123c4d189d010b4c430511edd091775c9eedac",
    "004_security_policies.sql": "f08620896555f4b74dc38c1c7c1760e6e6869b2992cf89ce8c8628fcad7198e6",
    "005_functions_and_triggers.sql": "4ae7b99a8b2cce93e007a35ac14d12761dad607a634f7dac9a1ebcfd89068637",
    "006_realtime_publication.sql": "0a82dac22687c3b0541ce2ecff5ea625e325833ce84b94b63c3495c8535abba9",
}


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str
    earlier_checksum: str | None = None  # the whole-text checksum of an earlier text (EARLIER_CHECKSUMS)

    @property
    def checksum(self) -> str:
        """The SHA-256 of its SQL without comment-only and blank lines (a comment's fix changes nothing)."""
        return hashlib.sha256(sql_lines(self.sql).encode()).hexdigest()

    def accepts(self, recorded: str) -> bool:
        """Whether a ledger's checksum is of this file's SQL: today's checksum, or the whole-text checksum that
        ledgers recorded before, of this text or of an earlier one that EARLIER_CHECKSUMS accepts."""
        whole_text = hashlib.sha256(self.sql.encode()).hexdigest()
        return recorded in (self.checksum, whole_text, self.earlier_checksum)

    @classmethod
    def from_file(cls, path: Path) -> Migration:
        return cls(path.name, path.read_text(encoding="utf-8"), EARLIER_CHECKSUMS.get(path.name))


def sql_lines(text: str) -> str:
    """The text without its comment-only and blank lines, and without trailing whitespace: what the checksum
    covers. (A line starting with `--` is a comment in plpgsql bodies too.)"""
    lines = (line.rstrip() for line in text.splitlines())
    return "\n".join(line for line in lines if line and not line.lstrip().startswith("--"))


def migrations_in(directory: Path = SQL_DIR) -> list[Migration]:
    """The migration files of `directory` (named NNN_words.sql), in order."""
    return [Migration.from_file(p) for p in sorted(directory.glob("*.sql")) if MIGRATION_NAME.match(p.name)]


def migration_status(conn: psycopg.Connection) -> list[dict[str, str]]:
    """Each migration file and whether this database has it applied."""
    applied = applied_checksums(conn)
    return [{"migration": m.name, "status": "applied" if m.name in applied else "pending"}
            for m in migrations_in()]


def applied_checksums(conn: psycopg.Connection) -> dict[str, str]:
    exists = conn.execute("select to_regclass('attendance_kit.applied_migrations') is not null").fetchone()[0]
    if not exists:
        return {}
    return dict(conn.execute("select name, checksum from attendance_kit.applied_migrations").fetchall())


def migrate(
    conn: psycopg.Connection, migrations: list[Migration] | None = None, through: str | None = None
) -> list[str]:
    """Apply what is not applied yet, each file in its own transaction; return the names applied.

    `through` stops after that file, so a notebook can bring a fresh database up to its own step.
    """
    migrations = migrations_in() if migrations is None else migrations
    names = [m.name for m in migrations]
    if through is not None and through not in names:
        raise KitError(f"no migration named {through}: the files are {', '.join(names)}")
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", [LOCK_KEY])
        conn.execute(LEDGER_DDL)
        recorded = applied_checksums(conn)
        check_ledger(recorded, migrations)
        for migration in migrations:  # rows of an earlier kit: today's checksum from now on
            if recorded.get(migration.name, migration.checksum) != migration.checksum:
                conn.execute("update attendance_kit.applied_migrations set checksum = %s where name = %s",
                             [migration.checksum, migration.name])
    applied = []
    for migration in migrations[: names.index(through) + 1] if through else migrations:
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(%s)", [LOCK_KEY])
            if migration.name in applied_checksums(conn):  # another runner applied it meanwhile
                continue
            execute_sql(conn, migration.name, migration.sql)
            conn.execute("insert into attendance_kit.applied_migrations (name, checksum) values (%s, %s)",
                         [migration.name, migration.checksum])
        applied.append(migration.name)
    return applied


def check_ledger(recorded: dict[str, str], migrations: list[Migration]) -> None:
    """Refuse a database whose ledger names a file whose SQL changed since it was applied, or that is gone."""
    by_name = {m.name: m for m in migrations}
    changed = [name for name, checksum in recorded.items() if name in by_name and not by_name[name].accepts(checksum)]
    gone = [name for name in recorded if name not in by_name]
    if not changed and not gone:
        return
    what = "; ".join([f"sql/{name} changed since it was applied" for name in changed]
                     + [f"sql/{name} no longer exists" for name in gone])
    raise KitError(f"this database was migrated from other versions of sql/ ({what}): if you edited an applied "
                   "file, restore it and put the change in a new migration file; if the kit's sql/ changed, start "
                   "the database over: `./kit db reset` for the kit's own cluster (it drops every database in it, your "
                   "own tables and rows included), or drop and recreate a database of your own")


def execute_sql(conn: psycopg.Connection, name: str, text: str) -> None:
    """Run a file's statements; a failure becomes a KitError naming the file."""
    try:
        # Without parameters psycopg sends the simple query protocol, so a file may hold many statements.
        conn.execute(text)
    except psycopg.Error as error:
        raise KitError(f"sql/{name} failed: {one_line(error)}") from None
