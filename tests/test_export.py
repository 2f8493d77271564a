"""`attendance-kit export supabase`: a Supabase CLI project whose migrations apply with psql, in file order, on a
fresh PostgreSQL 15, and whose pgTAP tests of the access contract pass there and fail on a loosened policy.

The pgTAP part needs Debian's PostgreSQL 15 with pgTAP (`postgresql-15-pgtap`), which `.ci/run` installs when it
runs as root; elsewhere it is skipped, saying so.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from psycopg import sql

from attendance_kit import connect
from attendance_kit.connection import url_with_database
from attendance_kit.export import CONFIG_FILE, TEST_FILE, export_supabase
from attendance_kit.migrations import migrations_in
from attendance_kit.server import Cluster
from attendance_kit.verification import Contract

# The read policy on realtime.messages replaced by one that lets any signed-in user join any session's topic.
LOOSENED_TOPIC_POLICY = """
    drop policy "Teachers and invited students read their sessions' topics" on realtime.messages;
    create policy "Anyone reads any session topic" on realtime.messages for select to authenticated
    using ((select realtime.topic()) like 'session:%')
"""
PG15 = Path("/usr/lib/postgresql/15/bin")
PGTAP = Path("/usr/share/postgresql/15/extension/pgtap.control")


def test_the_export_is_a_supabase_project_and_exporting_again_changes_nothing(tmp_path: Path) -> None:
    written = export_supabase(tmp_path)
    migrations = sorted((tmp_path / "supabase" / "migrations").iterdir())
    assert [re.sub(r"^\d{14}_", "", m.name) for m in migrations] == [m.name[4:] for m in migrations_in()]
    assert [m.read_text() for m in migrations] == [m.sql for m in migrations_in()]
    assert all(re.fullmatch(r"2026010100000\d_[a-z_]+\.sql", m.name) for m in migrations)
    assert (tmp_path / "supabase" / "seed.sql").exists()
    tests = (tmp_path / TEST_FILE).read_text()
    assert f"select plan({len(Contract.load().checks())});" in tests
    assert len(written) == len(migrations) + 3
    times = {path: path.stat().st_mtime_ns for path in written}
    assert export_supabase(tmp_path) == []
    assert {path: path.stat().st_mtime_ns for path in written} == times
    # A project's own config stays as it is.
    (tmp_path / CONFIG_FILE).write_text('project_id = "theirs"\n')
    assert export_supabase(tmp_path) == [] and (tmp_path / CONFIG_FILE).read_text() == 'project_id = "theirs"\n'


@pytest.mark.skipif(not (PG15 / "psql").exists() or not PGTAP.exists(),
                    reason="needs Debian's PostgreSQL 15 with pgTAP (apt-get install postgresql-15-pgtap)")
def test_the_pgtap_tests_pass_on_postgresql_15_and_catch_a_loosened_policy(
        tmp_path: Path, scratch_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    export_supabase(tmp_path)
    monkeypatch.setenv("ATTENDANCE_KIT_PG_BIN", str(PG15))
    cluster = Cluster(scratch_dir / "pg15")
    server = cluster.up()
    try:
        with connect(server) as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier("project")))
        project = url_with_database(server, "project")
        files = sorted((tmp_path / "supabase" / "migrations").iterdir()) + [tmp_path / "supabase" / "seed.sql"]
        for path in files:
            psql(project, path)
        results = psql(project, tmp_path / TEST_FILE)
        checks = len(Contract.load().checks())
        assert results.count("\nok ") + results.startswith("ok ") == checks, results[-3000:]
        assert "not ok" not in results
        with connect(project) as conn:
            conn.execute("create policy everyone on public.courses for select to authenticated using (true)")
        loosened = psql(project, tmp_path / TEST_FILE)
        failed = re.findall(r"^not ok \d+ - (.*)$", loosened, re.M)
        assert failed and all(line.startswith("courses: ") for line in failed), failed
        with connect(project) as conn:  # the courses policy back as it was; any session's topic open to all
            conn.execute("drop policy everyone on public.courses")
            conn.execute(LOOSENED_TOPIC_POLICY)
        loosened = psql(project, tmp_path / TEST_FILE)
        failed = re.findall(r"^not ok \d+ - (.*)$", loosened, re.M)
        assert "topic lecture: student receive is denied" in failed, failed
        assert all(line.startswith("topic ") for line in failed), failed
    finally:
        cluster.down()


def psql(url: str, path: Path) -> str:
    """Run a file as psql does (autocommit, stop at the first error); its output, tuples only."""
    result = subprocess.run([str(PG15 / "psql"), url, "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-f", str(path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{path.name}: {result.stderr[-2000:]}"
    return result.stdout
