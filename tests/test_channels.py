"""websocket_channels as the gateway keeps it (channels.py), on a real database: the topic convention, a client
counted in and out, and a restarted gateway taking back exactly its own counts."""

from __future__ import annotations

import uuid
from datetime import datetime

import psycopg
import pytest

from attendance_kit.demo import COMPILERS_LECTURE, ENGINES_LECTURE
from attendance_kit.realtime import channels

LECTURE = uuid.UUID(ENGINES_LECTURE)
OTHER_LECTURE = uuid.UUID(COMPILERS_LECTURE)


@pytest.mark.parametrize(("topic", "parsed"), [
    (f"realtime:session:{LECTURE}:lobby", (LECTURE, "lobby")),
    (f"realtime:session:{str(LECTURE).upper()}:lobby", (LECTURE, "lobby")),
    (f"realtime:session:{LECTURE}:room:with:colons", (LECTURE, "room:with:colons")),
    (f"realtime:session:{LECTURE}:two\nlines", (LECTURE, "two\nlines")),
    (f"realtime:session:{LECTURE}:", None),  # no channel name
    (f"realtime:session:{LECTURE}", None),
    (f"session:{LECTURE}:lobby", None),  # not a Realtime topic
    ("realtime:session:not-a-uuid:lobby", None),
    (f"realtime:session:{str(LECTURE)[:-1]}:lobby", None),
    ("realtime:room", None),
])
def test_the_topic_convention_names_a_session_s_channel(topic: str, parsed: tuple[uuid.UUID, str] | None) -> None:
    assert channels.session_channel(topic) == parsed


def counts(conn: psycopg.Connection) -> dict[tuple[uuid.UUID, str], int]:
    return {(session, name): count for session, name, count in conn.execute(
        "select session_id, channel_name, active_connections from websocket_channels")}


def recorded(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("select gateway, sum(connections)::int from private.gateway_connections "
                             "group by gateway").fetchall())


def last_activity(conn: psycopg.Connection, name: str) -> datetime:
    return conn.execute("select last_activity from websocket_channels where channel_name = %s", [name]).fetchone()[0]


def test_a_join_creates_the_channel_then_counts_and_a_leave_counts_out(conn: psycopg.Connection) -> None:
    assert counts(conn) == {}
    conn.execute("set attendance_kit.as_of = '2026-12-07 09:00:00+00'")
    assert channels.joined(conn, "gw-a", LECTURE, "lobby") is True
    assert counts(conn) == {(LECTURE, "lobby"): 1}
    assert last_activity(conn, "lobby").isoformat() == "2026-12-07T09:00:00+00:00"
    conn.execute("set attendance_kit.as_of = '2026-12-07 09:05:00+00'")
    assert channels.joined(conn, "gw-a", LECTURE, "lobby") is True
    assert channels.joined(conn, "gw-b", LECTURE, "lobby") is True
    assert counts(conn) == {(LECTURE, "lobby"): 3} and recorded(conn) == {"gw-a": 2, "gw-b": 1}

    conn.execute("set attendance_kit.as_of = '2026-12-07 09:10:00+00'")
    channels.left(conn, "gw-b", LECTURE, "lobby")
    assert counts(conn) == {(LECTURE, "lobby"): 2} and recorded(conn) == {"gw-a": 2, "gw-b": 0}
    assert last_activity(conn, "lobby").isoformat() == "2026-12-07T09:10:00+00:00"
    channels.left(conn, "gw-b", LECTURE, "lobby")  # gw-b counted nobody more: nothing to take back
    channels.left(conn, "gw-c", LECTURE, "lobby")  # nor did a gateway that never counted
    assert counts(conn) == {(LECTURE, "lobby"): 2}


def test_a_join_to_no_session_records_nothing(conn: psycopg.Connection) -> None:
    assert channels.joined(conn, "gw-a", uuid.UUID(int=1), "lobby") is False
    assert counts(conn) == {} and recorded(conn) == {}
    channels.left(conn, "gw-a", uuid.UUID(int=1), "lobby")  # and leaving it is harmless
    assert counts(conn) == {}


def test_a_restarted_gateway_takes_back_only_its_own_counts(conn: psycopg.Connection) -> None:
    conn.execute("insert into websocket_channels (session_id, channel_name, active_connections) "
                 "values (%s, 'lobby', 5)", [LECTURE])  # another writer's five
    for gateway, session, name in (("gw-a", LECTURE, "lobby"), ("gw-a", LECTURE, "lobby"),
                                   ("gw-a", OTHER_LECTURE, "questions"), ("gw-b", LECTURE, "lobby")):
        channels.joined(conn, gateway, session, name)
    assert counts(conn) == {(LECTURE, "lobby"): 8, (OTHER_LECTURE, "questions"): 1}

    assert channels.reconcile(conn, "gw-a") == 2  # the channels it fixed
    assert counts(conn) == {(LECTURE, "lobby"): 6, (OTHER_LECTURE, "questions"): 0}
    assert recorded(conn) == {"gw-b": 1}
    assert channels.reconcile(conn, "gw-a") == 0  # nothing left to take back


def test_a_count_lowered_by_hand_never_goes_below_zero(conn: psycopg.Connection) -> None:
    channels.joined(conn, "gw-a", LECTURE, "lobby")
    channels.joined(conn, "gw-a", LECTURE, "lobby")
    conn.execute("update websocket_channels set active_connections = 1")  # an administrator's correction
    channels.left(conn, "gw-a", LECTURE, "lobby")
    channels.left(conn, "gw-a", LECTURE, "lobby")
    assert counts(conn) == {(LECTURE, "lobby"): 0}
    channels.joined(conn, "gw-b", LECTURE, "lobby")
    conn.execute("update websocket_channels set active_connections = 0")
    assert channels.reconcile(conn, "gw-b") == 1 and counts(conn) == {(LECTURE, "lobby"): 0}


def test_bookkeeping_of_a_channel_deleted_since_is_dropped_at_the_next_start(conn: psycopg.Connection) -> None:
    channels.joined(conn, "gw-a", LECTURE, "lobby")
    conn.execute("truncate websocket_channels")  # no foreign key: the bookkeeping row stays behind
    assert recorded(conn) == {"gw-a": 1}
    assert channels.reconcile(conn, "gw-a") == 0 and recorded(conn) == {}
