"""What the notebooks show (attendance_kit/display.py): the delivery matrix of a real poll, `eventually`, and
JupySQL loaded quietly."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psycopg
import pytest

from attendance_kit import KitError, as_user
from attendance_kit.demo import ADA, COMPILERS_LECTURE, ENGINES_LECTURE, GRACE, SAM, TESS
from attendance_kit.display import RECEIVED, delivery_matrix, eventually, load_sql_magic
from attendance_kit.realtime import Realtime


def request(conn: psycopg.Connection, who: str, statement: str, params: list[object]) -> None:
    with as_user(conn, who) as cur:
        cur.execute(statement, params)


def test_the_delivery_matrix_marks_who_received_each_change_of_the_reference(
        conn: psycopg.Connection, db_url: str) -> None:
    with Realtime(db_url) as realtime:
        tables = ["live_sessions", "attendance_records"]
        subscribers = {"Ada": realtime.subscribe(ADA.email, tables=tables),
                       "Sam": realtime.subscribe(SAM.email, tables=tables),
                       "Grace": realtime.subscribe(GRACE.email, tables=["live_sessions"]),
                       "service_role": realtime.subscribe("service_role", tables=tables)}
        request(conn, ADA.email, "update live_sessions set status = 'live' where id = %s", [ENGINES_LECTURE])
        for student in (SAM, TESS):
            request(conn, student.email, "insert into attendance_records (session_id, student_id) "
                    "values (%s, auth.uid())", [ENGINES_LECTURE])
        request(conn, GRACE.email, "update live_sessions set status = 'live' where id = %s", [COMPILERS_LECTURE])
        # Gone before the poll: its insert reaches nobody (RLS is asked when the poll runs), its delete everyone.
        request(conn, "service_role", "delete from attendance_records where student_id = %s", [TESS.id])
        received = realtime.poll()
    matrix = delivery_matrix(conn, received, subscribers, {ENGINES_LECTURE: "Engines"})
    assert list(matrix.columns) == ["Ada", "Sam", "Grace"]
    assert matrix.to_dict("split")["index"] == [
        "Engines   live_sessions UPDATE: status live",
        f"Engines   attendance_records INSERT: {SAM.name}, present=True",
        f"{COMPILERS_LECTURE} live_sessions UPDATE: status live",  # a session without a short name: its id
        "?         attendance_records DELETE: a row's id",
    ]
    # Ada and Sam see their lecture, Grace only the sessions table and her own; the delete reaches every
    # subscription to its table unchecked.
    assert matrix.to_numpy().tolist() == [[RECEIVED, RECEIVED, ""], [RECEIVED, RECEIVED, ""], ["", "", RECEIVED],
                                          [RECEIVED, RECEIVED, ""]]
    # A subscriber that received what the reference did not: the matrix would have no row for it.
    with pytest.raises(KitError, match="^Ada received a change of live_sessions that Grace did not: subscribe Grace"):
        delivery_matrix(conn, received, subscribers, {}, reference="Grace")


def test_eventually_waits_until_the_condition_holds_or_the_time_is_up() -> None:
    async def scenario() -> tuple[bool, float, bool, float]:
        flag: list[int] = []
        asyncio.get_running_loop().call_later(0.2, flag.append, 1)
        started = time.monotonic()
        held = await eventually(lambda: flag, seconds=5)
        waited = time.monotonic() - started
        started = time.monotonic()
        never = await eventually(lambda: False, seconds=0.3)
        return held, waited, never, time.monotonic() - started

    held, waited, never, gave_up_after = asyncio.run(scenario())
    assert held and 0.15 < waited < 2
    assert not never and 0.3 <= gave_up_after < 2


def test_load_sql_magic_applies_the_kit_s_settings_without_naming_where_the_clone_lives() -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    shell = InteractiveShell.instance()
    try:
        with capture_output() as plain:  # what `%reload_ext sql` shows: the settings' file, by absolute path
            shell.run_line_magic("reload_ext", "sql")
        with capture_output() as quiet:
            load_sql_magic()
    finally:
        InteractiveShell.clear_instance()
    shown = [output.data["text/plain"] for output in plain.outputs]
    assert shown[0] == f"Loading configurations from {Path('pyproject.toml').resolve()}."
    assert [output.data["text/plain"] for output in quiet.outputs] == shown[1:]  # the settings table stays
    assert "displaycon  | False" in shown[-1] and "feedback   |   0" in shown[-1]
