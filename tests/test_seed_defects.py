"""Each defect of the seed's draft, shown failing on its own text and fixed by the kit's migrations."""

from __future__ import annotations

import psycopg
import pytest

from attendance_kit import connect, migrate
from tests.seed_draft import seed_sql


def test_seed_references_objects_it_never_defines(empty_db: str) -> None:
    with connect(empty_db) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable, match='relation "live_sessions" does not exist'):
            conn.execute(seed_sql())
        migrate(conn, through="002_base_schema.sql")
        # With the shim and the base schema in place, every object the draft names exists.
        with conn.transaction(force_rollback=True):
            conn.execute(seed_sql())
            tables = conn.execute("""
                select count(*) from pg_publication_tables where pubname = 'live_attendance_pub'
            """).fetchone()[0]
        assert tables == 4
