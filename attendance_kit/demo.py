"""Demo data: the documented personas (fixed UUIDs and emails) with their courses, groups and sessions."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from .migrations import SQL_DIR, execute_sql

DEMO_DATA_FILE = SQL_DIR / "seed.sql"


def load_demo_data(conn: psycopg.Connection) -> None:
    """Load sql/seed.sql in one transaction; loading it again changes nothing."""
    with conn.transaction():
        execute_sql(conn, DEMO_DATA_FILE.name, DEMO_DATA_FILE.read_text(encoding="utf-8"))


PERSONAS_QUERY = """
select u.email, p.full_name, p.role, g.name as student_group, u.id
from auth.users u
join public.profiles p on p.id = u.id
left join public.student_profiles sp on sp.id = u.id
left join public.student_groups g on g.id = sp.group_id
order by p.role desc, u.email
"""


def personas(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every user with their name, role and group, teachers first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(PERSONAS_QUERY).fetchall()
