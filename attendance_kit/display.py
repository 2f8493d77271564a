"""What the notebooks show: a file of sql/ as it is on disk, the access contract's result as a colour-coded table,
a query's rows as a persona reads them, who received which realtime change (pandas DataFrames); and two helpers:
`load_sql_magic` (JupySQL's `%sql`, quietly) and `eventually`, to wait for what a realtime client receives. The
command line needs none of it: IPython and pandas are imported only here, when a notebook calls these."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from .connection import as_user
from .errors import KitError
from .paths import SQL_DIR
from .verification import Verification

if TYPE_CHECKING:
    import pandas as pd
    from IPython.display import HTML, Markdown

    from .realtime import Event, Subscriber

RECEIVED = "✓"
JUPYSQL_SETTINGS_LOADED = "Loading configurations from "


def load_sql_magic() -> None:
    """`%reload_ext sql` (JupySQL), its settings from the kit's pyproject.toml, without the line JupySQL prints
    about them: "Loading configurations from <the absolute path of pyproject.toml>", which shows where this clone
    lives (and in committed notebooks, where the maintainer's did). JupySQL has no setting to silence it, and it
    finds the file from the working directory up, so any notebook of the kit meets it. Whatever else loading
    prints (a warning about a setting) is shown."""
    from IPython import get_ipython
    from IPython.utils.capture import capture_output

    with capture_output() as loading:
        get_ipython().run_line_magic("reload_ext", "sql")
    print(loading.stdout, end="")
    print(loading.stderr, end="", file=sys.stderr)
    for output in loading.outputs:
        if not str(output.data.get("text/plain", "")).startswith(JUPYSQL_SETTINGS_LOADED):
            output.display()


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


def delivery_matrix(conn: psycopg.Connection, received: Mapping[Subscriber, Sequence[Event]],
                    subscribers: Mapping[str, Subscriber], session_names: Mapping[str, str],
                    reference: str = "service_role") -> pd.DataFrame:
    """Who received which change, from one poll's `received` (`Realtime.poll`): a row per change the `reference`
    subscriber received (it should see every change), in commit order, and a column per other subscriber of
    `subscribers` (by name), ✓ where it received that change.

    A row names the change's session (by `session_names`: id -> short name), table and type and what changed,
    as the database's owner reads it on `conn`. A DELETE carries the deleted row's key alone: its row says so.
    """
    import pandas as pd

    names = {str(id): name for id, name in conn.execute("select id, full_name from public.profiles")}
    record_sessions = {str(id): str(session) for id, session in
                       conn.execute("select id, session_id from public.attendance_records")}
    changes = received.get(subscribers[reference], [])
    matrix = pd.DataFrame("", index=[_described(event, names, record_sessions, session_names) for event in changes],
                          columns=[name for name in subscribers if name != reference])
    position = {_change_key(event): i for i, event in enumerate(changes)}
    for name in matrix.columns:
        for event in received.get(subscribers[name], []):
            if _change_key(event) not in position:
                raise KitError(f"{name} received a change of {event['table']} that {reference} did not: subscribe "
                               f"{reference} to every table the others subscribe to")
            matrix.iloc[position[_change_key(event)], matrix.columns.get_loc(name)] = RECEIVED
    return matrix


def _change_key(event: Event) -> tuple[str, str, str | None, Any]:
    """One change, whoever received it."""
    row = event.get("record") or event["old_record"]
    return event["table"], event["type"], event["commit_timestamp"], row["id"]


def _described(event: Event, names: Mapping[str, str], record_sessions: Mapping[str, str],
               session_names: Mapping[str, str]) -> str:
    if event["type"] == "DELETE":  # it carries the deleted row's key alone: whose, or where, it does not say
        return f"{'?':9} {event['table']} DELETE: a row's id"
    row = event["record"]
    if "session_id" in row:
        session = str(row["session_id"])
    elif "attendance_id" in row:  # an attendance record's audit
        session = record_sessions.get(str(row["attendance_id"]), "?")
    else:  # a session itself
        session = str(row["id"])
    detail = {
        "live_sessions": lambda: f"status {row['status']}",
        "session_status_changes": lambda: f"{row['old_status']} → {row['new_status']}",
        "websocket_channels": lambda: f"{row['channel_name']}, {row['active_connections']} connections",
        "attendance_records": lambda: f"{names[str(row['student_id'])]}, present={row['status']}",
        "attendance_status_changes": lambda: f"{row['old_status']} → {row['new_status']}",
        "session_analytics": lambda: f"present {row['present_count']} of {row['total_students']}",
    }[event["table"]]()
    return f"{session_names.get(session, session):9} {event['table']} {event['type']}: {detail}"


async def eventually(condition: Callable[[], Any], seconds: float = 10.0) -> bool:
    """Wait (polling every 50 ms, for up to `seconds`) until `condition()` is true; return whether it is. For a
    notebook's asynchronous clients: `await eventually(lambda: received)`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True
