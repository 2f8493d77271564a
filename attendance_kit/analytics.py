"""Exploratory analytics through RLS: a query as a persona, as a pandas DataFrame.

    df = kit.query_as(conn, "ada@attendance-kit.test", "select title, status from live_sessions")

The query runs as Supabase's API would run it for that user (role + JWT claims, in a transaction that is
rolled back), so the DataFrame holds exactly the rows the policies let that user read.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import psycopg

from .connection import as_user

if TYPE_CHECKING:  # pandas is imported where it is used: the command line starts faster without it
    import pandas as pd


def query_as(conn: psycopg.Connection, who: str | uuid.UUID, query: str,
             params: dict[str, Any] | list[Any] | None = None) -> pd.DataFrame:
    """Rows of `query` as `who` (an email, a user id, 'anon' or 'service_role') reads them."""
    import pandas as pd

    with as_user(conn, who, rollback=True) as cur:
        cur.execute(query, params)
        columns = [column.name for column in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=columns)
