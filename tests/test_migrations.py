"""The migration runner: ordered files, one transaction each, a checksummed ledger."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attendance_kit import KitError, connect
from attendance_kit.migrations import applied_checksums, migrate, migrations_in
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
