"""What the notebooks show: a file of sql/ as it is on disk, the access contract's result as a colour-coded table,
and a query's rows as a persona reads them, as a pandas DataFrame. The command line needs none of it: IPython and
pandas are imported only here, when a notebook calls these."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import psycopg

from .connection import as_user
from .paths import SQL_DIR
from .verification import Verification

if TYPE_CHECKING:
    import pandas as pd
    from IPython.display import HTML, Markdown


def show_sql(name: str) -> Markdown:
    """A file of sql/ (a migration, seed.sql, the access contract) for a notebook, exactly as it is on disk."""
    from IPython.display import Markdown

    path = SQL_DIR / name
    language = "yaml" if path.suffix == ".yaml" else "sql"
    return Markdown(f"**`sql/{name}`**\n\n```{language}\n{path.read_text(encoding='utf-8').rstrip()}\n```")


def show_contract(result: Verification) -> HTML:
    """The contract's cells as a colour-coded table: a row per table and operation, a column per persona.

    Green: allowed (or rows visible), grey: denied, red: not what the contract says.
    """
    from IPython.display import HTML

    shown, ok = result.cells()

    def colour(column: pd.Series) -> list[str]:
        return ["background-color: #f4b6b6" if not ok.loc[index, column.name]
                else "background-color: #e6e6e6; color: #666" if value == "denied"
                else "background-color: #c8ebc8" for index, value in column.items()]

    return HTML(shown.style.apply(colour).set_uuid("access-matrix").to_html())


def query_as(conn: psycopg.Connection, who: str | uuid.UUID, query: str,
             params: dict[str, Any] | list[Any] | None = None) -> pd.DataFrame:
    """Rows of `query` as `who` (an email, a user id, 'anon' or 'service_role') reads them, through RLS: run as
    Supabase's API would run it for that user, in a transaction that is rolled back.

        df = kit.query_as(conn, "ada@attendance-kit.test", "select title, status from live_sessions")
    """
    import pandas as pd

    with as_user(conn, who, rollback=True) as cur:
        cur.execute(query, params)
        columns = [column.name for column in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=columns)
