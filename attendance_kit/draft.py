"""The draft: the schema's specification as it was handed over (data/draft.md, verbatim), defects included. The
tests that show each defect and the benchmark that measures its trigger run its SQL as it is."""

from __future__ import annotations

import re

import psycopg

from .demo import load_demo_data
from .migrations import migrate
from .paths import DRAFT_FILE


def draft_sql() -> str:
    """Every ```sql block of the draft, in order, as one script."""
    return "\n".join(re.findall(r"```sql\n(.*?)```", DRAFT_FILE.read_text(encoding="utf-8"), re.S))


def apply_draft(conn: psycopg.Connection, *, patch_not_null: bool = False) -> None:
    """On an empty database: what the draft builds on (the kit's auth shim and base schema, with the personas), then
    the draft's SQL. `patch_not_null` lets connection_count be NULL (defect 1), so that the draft's trigger runs
    at all and can be measured."""
    migrate(conn, through="002_base_schema.sql")
    load_demo_data(conn)
    conn.execute(draft_sql())
    if patch_not_null:
        conn.execute("alter table public.session_analytics alter column connection_count drop not null")
