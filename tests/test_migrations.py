"""The migration runner: ordered files, one transaction each, a checksummed ledger."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from attendance_kit import KitError, connect
from attendance_kit.migrations import EARLIER_CHECKSUMS, Migration, applied_checksums, migrate, migrations_in
from attendance_kit.paths import SQL_DIR


def test_files_apply_in_order_once(empty_db: str) -> None:
    names = [m.name for m in migrations_in()]
    assert names == sorted(names) and names[0] == "001_supabase_auth_shim.sql"
    with connect(empty_db) as conn:
        assert migrate(conn) == names
        assert migrate(conn) == []
        assert sorted(applied_checksums(conn)) == names


def test_a_changed_applied_file_is_refused_by_name(empty_db: str, tmp_path: Path) -> None:
    shutil.copytree(SQL_DIR, tmp_path / "sql")
    with connect(empty_db) as conn:
        migrate(conn, migrations_in(tmp_path / "sql"))
        base = tmp_path / "sql" / "002_base_schema.sql"
        base.write_text(base.read_text() + "\ncreate table public.sneaked_in (id int);\n")
        with pytest.raises(KitError, match=r"sql/002_base_schema.sql changed since it was applied.*db reset"):
            migrate(conn, migrations_in(tmp_path / "sql"))
        assert conn.execute("select to_regclass('public.sneaked_in')").fetchone()[0] is None


def test_a_ledger_naming_files_that_are_gone_is_refused_before_anything_runs(empty_db: str, tmp_path: Path) -> None:
    """After sql/ is rewritten (e.g. migrations folded into others), an old database says how to start over."""
    (tmp_path / "001_first.sql").write_text("create table public.first (id int);")
    (tmp_path / "002_later_fix.sql").write_text("alter table public.first add column note text;")
    with connect(empty_db) as conn:
        migrate(conn, migrations_in(tmp_path))
        (tmp_path / "002_later_fix.sql").unlink()
        (tmp_path / "001_first.sql").write_text("create table public.first (id int, note text);")
        (tmp_path / "003_new.sql").write_text("create table public.third (id int);")
        with pytest.raises(KitError, match=r"\(sql/001_first.sql changed since it was applied; "
                                           r"sql/002_later_fix.sql no longer exists\).*`\./kit db reset`"):
            migrate(conn, migrations_in(tmp_path), through="003_new.sql")
        assert conn.execute("select to_regclass('public.third')").fetchone()[0] is None


def test_a_failing_file_is_named_and_leaves_nothing_behind(empty_db: str, tmp_path: Path) -> None:
    (tmp_path / "001_good.sql").write_text("create table public.first (id int);")
    (tmp_path / "002_bad.sql").write_text("create table public.second (id int);\nselect * from nowhere;")
    with connect(empty_db) as conn:
        with pytest.raises(KitError, match=r'sql/002_bad.sql failed: relation "nowhere" does not exist'):
            migrate(conn, migrations_in(tmp_path))
        assert list(applied_checksums(conn)) == ["001_good.sql"]
        assert conn.execute("select to_regclass('public.second')").fetchone()[0] is None


def test_only_numbered_files_are_migrations(tmp_path: Path) -> None:
    for name in ("010_later.sql", "002_early.sql", "seed.sql", "notes.md", "3_short.sql"):
        (tmp_path / name).write_text("select 1;")
    assert [m.name for m in migrations_in(tmp_path)] == ["002_early.sql", "010_later.sql"]


def whole_text_checksum(text: str) -> str:
    """What the ledger recorded before it ignored comments."""
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_comment_edit_in_an_applied_file_is_accepted_and_a_sql_edit_refused(empty_db: str, tmp_path: Path) -> None:
    shutil.copytree(SQL_DIR, tmp_path / "sql")
    with connect(empty_db) as conn:
        migrate(conn, migrations_in(tmp_path / "sql"))
        base = tmp_path / "sql" / "003_tables_and_indexes.sql"
        original = base.read_text()
        base.write_text("-- A comment line rewritten, another added.\n\n" + original.replace(
            "-- Index for efficient status change queries", "  --   Indexes for status change queries   ")
            .replace(";\n", ";   \n\n"))  # blank lines and trailing whitespace
        assert migrate(conn, migrations_in(tmp_path / "sql")) == []
        for sql_edit in (original.replace("(session_id, changed_at)", "(changed_at, session_id)"),
                         original.replace("default 0 check", "default 0 check -- a note\n   "),
                         original + "\ncomment on table public.websocket_channels is 'x'; -- sneaked in"):
            base.write_text(sql_edit)
            with pytest.raises(KitError, match=r"sql/003_tables_and_indexes.sql changed since it was applied"):
                migrate(conn, migrations_in(tmp_path / "sql"))


def test_an_old_style_ledger_row_is_accepted_while_the_sql_is_unchanged_and_rewritten(
        empty_db: str, tmp_path: Path) -> None:
    """Ledgers written before the checksum ignored comments hold the whole text's SHA-256."""
    before = "-- The first table.\ncreate table public.first (id int);\n"
    (tmp_path / "001_first.sql").write_text(before)
    with connect(empty_db) as conn:
        migrate(conn, migrations_in(tmp_path))
        ledger = "update attendance_kit.applied_migrations set checksum = %s where name = '001_first.sql'"
        conn.execute(ledger, [whole_text_checksum(before)])
        assert migrate(conn, migrations_in(tmp_path)) == []  # the same text
        (today,) = migrations_in(tmp_path)
        assert applied_checksums(conn) == {"001_first.sql": today.checksum}

        # Its comment corrected since: accepted when the kit knows the earlier text's checksum (EARLIER_CHECKSUMS).
        conn.execute(ledger, [whole_text_checksum(before)])
        after = "-- The first table, corrected.\ncreate table public.first (id int);\n"
        unknown = [Migration("001_first.sql", after)]
        with pytest.raises(KitError, match=r"sql/001_first.sql changed since it was applied"):
            migrate(conn, unknown)
        assert migrate(conn, [Migration("001_first.sql", after, whole_text_checksum(before))]) == []
        assert applied_checksums(conn) == {"001_first.sql": unknown[0].checksum}

        # Its SQL changed: refused, whatever the row's style.
        changed = "-- The first table.\ncreate table public.first (id bigint);\n"
        for row in (whole_text_checksum(before), unknown[0].checksum):
            conn.execute(ledger, [row])
            with pytest.raises(KitError, match=r"sql/001_first.sql changed since it was applied"):
                migrate(conn, [Migration("001_first.sql", changed)])


# The one file whose SQL changed since 67cf4b8, and how: auth.users created only where missing.
GUARDED_SINCE = {"001_supabase_auth_shim.sql": ("create table if not exists auth.users (",
                                                "if to_regclass('auth.users') is null then")}


def test_the_kit_s_earlier_checksums_are_of_its_files_with_other_comments_and_the_same_sql() -> None:
    """EARLIER_CHECKSUMS name the texts of sql/ at commit 67cf4b8 (read from the repository's history): the same
    SQL as today, but for 001, whose one change is a guard."""
    today = {m.name: m for m in migrations_in()}
    for name, checksum in EARLIER_CHECKSUMS.items():
        shown = subprocess.run(["git", "show", f"67cf4b8:sql/{name}"], cwd=SQL_DIR, capture_output=True, text=True)
        if shown.returncode != 0:
            pytest.skip(f"the repository's history lacks commit 67cf4b8 (a shallow clone?): {shown.stderr.strip()}")
        earlier = Migration(name, shown.stdout)
        assert whole_text_checksum(shown.stdout) == checksum and earlier.sql != today[name].sql
        assert today[name].accepts(checksum)
        if name in GUARDED_SINCE:
            before, after = GUARDED_SINCE[name]
            assert before in earlier.sql and before not in today[name].sql and after in today[name].sql
        else:
            assert earlier.checksum == today[name].checksum


def test_the_auth_shim_applies_where_the_migrating_role_may_not_create_in_schema_auth(empty_db: str) -> None:
    """As on a Supabase project today: Supabase's auth objects exist, and `postgres` has only USAGE on schema
    auth. The shim runs there; its earlier `create table if not exists auth.users` did not."""
    (shim,) = [m for m in migrations_in() if m.name == "001_supabase_auth_shim.sql"]
    role = sql.Identifier(f"kit_shim_{uuid.uuid4().hex[:8]}")
    with connect(empty_db) as conn:
        conn.execute(shim.sql)  # Supabase's objects, as the platform made them
        conn.execute(sql.SQL("create role {} createrole; grant usage on schema auth to {}").format(role, role))
        conn.execute(sql.SQL("grant create on database {} to {}").format(sql.Identifier(conn.info.dbname), role))
        conn.commit()
        conn.execute(sql.SQL("set role {}").format(role))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="schema auth"):
            conn.execute("create table if not exists auth.users (id uuid primary key)")
        conn.rollback()
        conn.execute(sql.SQL("set role {}").format(role))
        conn.execute(shim.sql)
