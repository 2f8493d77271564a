"""The Realtime gateway with Supabase's own Python client (`realtime` from PyPI) as its peer, on a real server.

Each test starts a gateway on a free port in front of a fresh database (migrated, demo data) and connects the
unmodified client to it, as an app would connect to a Supabase project: what reaches whom, filters, token refresh
and expiry, a gateway restart, websocket_channels, and bad input from raw sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import websockets
from realtime import AsyncRealtimeChannel, AsyncRealtimeClient
from realtime.types import ChannelEvents, RealtimeAcknowledgementStatus

from attendance_kit import as_user
from attendance_kit.connection import resolve_user
from attendance_kit.demo import ADA, COMPILERS_LECTURE, ENGINES_LECTURE, OLIVE, SAM, TESS, UMA
from attendance_kit.realtime.gateway import Gateway
from attendance_kit.realtime.tokens import sign, token_for

LOBBY = f"session:{ENGINES_LECTURE}:lobby"  # a channel of Ada's lecture, by the kit's topic convention


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def gateway(db_url: str) -> Iterator[Gateway]:
    with Gateway(db_url, port=free_port(), poll_interval=0.05) as running:
        yield running


def check_in(conn: psycopg.Connection, who: str, session: str = ENGINES_LECTURE) -> None:
    with as_user(conn, who) as cur:
        cur.execute("insert into attendance_records (session_id, student_id) values (%s, auth.uid())", [session])


def open_lectures(conn: psycopg.Connection) -> None:
    conn.execute("update live_sessions set status = 'live'")


def counts(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("select channel_name, active_connections from websocket_channels "
                             "where session_id = %s", [ENGINES_LECTURE]).fetchall())


async def eventually(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


class Listener:
    """One Supabase client with one channel: what its postgres_changes and system callbacks received."""

    def __init__(self, gateway: Gateway, token: str, topic: str = LOBBY, **client: Any) -> None:
        self.client = AsyncRealtimeClient(gateway.url, token, **{"auto_reconnect": False, **client})
        self.topic = topic
        self.changes: list[dict[str, Any]] = []
        self.system: list[Any] = []
        self.states: list[tuple[str, str]] = []  # what the client reported: (state, error)
        self.channel: AsyncRealtimeChannel | None = None

    async def join(self, table: str = "attendance_records", filter: str | None = None, event: str = "*") -> None:
        await self.client.connect()
        self.channel = self.client.channel(self.topic)
        self.channel.on_postgres_changes(event, self.changes.append, table=table, schema="public", filter=filter)
        self.channel.on_system(self.system.append)
        await self.channel.subscribe(lambda state, error: self.states.append((state.value, str(error or ""))))
        await eventually(lambda: any(s.message == "Subscribed to PostgreSQL" for s in self.system))

    def records(self, key: str = "student_id") -> list[str]:
        return [str(c["data"]["record"][key]) for c in self.changes if c["data"]["type"] != "DELETE"]


def test_each_receives_what_rls_lets_it_select_and_the_outsider_nothing(
        conn: psycopg.Connection, db_url: str, gateway: Gateway) -> None:
    open_lectures(conn)

    async def scenario() -> dict[str, Listener]:
        listeners = {who: Listener(gateway, token_for(conn, who)) for who in (ADA.email, SAM.email, OLIVE.email)}
        for listener in listeners.values():
            await listener.join()
        check_in(conn, SAM.email)
        check_in(conn, TESS.email)
        check_in(conn, OLIVE.email, COMPILERS_LECTURE)
        await eventually(lambda: len(listeners[ADA.email].changes) == 2 and listeners[SAM.email].changes)
        await asyncio.sleep(0.5)  # what else would arrive has had time to
        for listener in listeners.values():
            await listener.client.close()
        return listeners

    listeners = asyncio.run(scenario())
    for who, listener in listeners.items():
        with as_user(conn, who, rollback=True) as cur:
            readable = sorted(str(r["student_id"]) for r in cur.execute("select student_id from attendance_records"))
        assert sorted(listener.records()) == readable, who
    assert sorted(listeners[ADA.email].records()) == sorted([SAM.id, TESS.id])
    assert listeners[SAM.email].records() == [SAM.id]
    assert listeners[OLIVE.email].records() == [OLIVE.id]  # her own, in Grace's lecture; nothing of Ada's
    (change,) = listeners[SAM.email].changes
    assert change["ids"] and change["data"]["columns"][0] == {"name": "id", "type": "uuid"}


def test_a_filter_narrows_and_an_event_type_selects(conn: psycopg.Connection, gateway: Gateway) -> None:
    open_lectures(conn)

    async def scenario() -> tuple[Listener, Listener]:
        only_sam = Listener(gateway, token_for(conn, ADA.email))
        await only_sam.join(filter=f"student_id=eq.{SAM.id}")
        updates = Listener(gateway, token_for(conn, ADA.email), topic="updates")
        await updates.join(event="UPDATE")
        check_in(conn, SAM.email)
        check_in(conn, TESS.email)
        conn.execute("update attendance_records set status = false where student_id = %s", [TESS.id])
        await eventually(lambda: updates.changes and len(only_sam.changes) == 1)
        await asyncio.sleep(0.3)
        for listener in (only_sam, updates):
            await listener.client.close()
        return only_sam, updates

    only_sam, updates = asyncio.run(scenario())
    assert only_sam.records() == [SAM.id]
    assert [(c["data"]["type"], str(c["data"]["record"]["student_id"])) for c in updates.changes] == [
        ("UPDATE", TESS.id)]


def test_a_refreshed_token_changes_what_arrives_and_an_expired_one_closes_the_channel(
        conn: psycopg.Connection, gateway: Gateway) -> None:
    open_lectures(conn)

    async def scenario() -> tuple[Listener, Listener, Any]:
        refreshed = Listener(gateway, token_for(conn, OLIVE.email))
        await refreshed.join()
        check_in(conn, SAM.email)  # Olive may not see it
        await asyncio.sleep(0.5)
        before = list(refreshed.changes)
        await refreshed.client.set_auth(token_for(conn, ADA.email))  # the same socket, now Ada's claims
        await asyncio.sleep(0.3)
        check_in(conn, TESS.email)
        await eventually(lambda: len(refreshed.changes) > len(before))

        expiring = Listener(gateway, sign({**_claims(conn, ADA.email), "exp": int(time.time()) + 2}))
        await expiring.join()
        await eventually(lambda: ("CLOSED", "") in expiring.states, seconds=10)
        state = expiring.channel.state
        for listener in (refreshed, expiring):
            await listener.client.close()
        return refreshed, expiring, (before, state)

    refreshed, expiring, (before, state) = asyncio.run(scenario())
    assert before == [] and refreshed.records() == [TESS.id]
    # The system error, then phx_close: the client reports both, and the channel is closed.
    (state_error,) = [json.loads(error) for state, error in expiring.states if state == "CHANNEL_ERROR"]
    assert state_error["extension"] == "system" and state_error["message"].startswith("Token has expired")
    assert expiring.states[-1] == ("CLOSED", "") and state.value == "closed"


def _claims(conn: psycopg.Connection, who: str) -> dict[str, Any]:
    return resolve_user(conn, who)[1]


def test_the_client_rejoins_a_restarted_gateway(conn: psycopg.Connection, db_url: str) -> None:
    open_lectures(conn)
    port = free_port()

    async def scenario() -> Listener:
        first = Gateway(db_url, port=port, poll_interval=0.05).start()
        listener = Listener(first, token_for(conn, ADA.email), auto_reconnect=True,
                            initial_backoff=0.2, max_retries=20)
        await listener.join()
        await asyncio.to_thread(first.stop)
        second = await asyncio.to_thread(Gateway(db_url, port=port, poll_interval=0.05).start)
        try:
            subscribed = len(listener.system)
            await eventually(lambda: len(listener.system) > subscribed, seconds=30)  # joined again: subscribed
            check_in(conn, SAM.email)
            await eventually(lambda: listener.changes)
            await listener.client.close()
        finally:
            await asyncio.to_thread(second.stop)
        return listener

    assert asyncio.run(scenario()).records() == [SAM.id]


def test_broadcast_reaches_the_topic_s_other_clients_and_the_sender_with_self_and_an_ack(
        conn: psycopg.Connection, gateway: Gateway) -> None:
    async def scenario() -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        ada = AsyncRealtimeClient(gateway.url, token_for(conn, ADA.email), auto_reconnect=False)
        sam = AsyncRealtimeClient(gateway.url, token_for(conn, SAM.email), auto_reconnect=False)
        olive = AsyncRealtimeClient(gateway.url, token_for(conn, OLIVE.email), auto_reconnect=False)
        heard: dict[str, list[Any]] = {"ada": [], "sam": [], "olive": []}
        loud = ada.channel("room", {"config": {"broadcast": {"self": True, "ack": True}, "private": False}})
        quiet = sam.channel("room")
        elsewhere = olive.channel("another-room")
        for name, channel in (("ada", loud), ("sam", quiet), ("olive", elsewhere)):
            channel.on_broadcast("wave", heard[name].append)
            await channel.subscribe()
        acks: list[Any] = []
        push = await loud.push(ChannelEvents.broadcast, {"type": "broadcast", "event": "wave", "payload": {"n": 1}})
        push.receive(RealtimeAcknowledgementStatus.Ok, acks.append)
        await quiet.send_broadcast("wave", {"n": 2})
        await eventually(lambda: len(heard["ada"]) == 2 and heard["sam"] and acks)
        await asyncio.sleep(0.3)
        for client in (ada, sam, olive):
            await client.close()
        return heard["ada"], heard["sam"], heard["olive"], acks

    ada, sam, olive, acks = asyncio.run(scenario())
    assert [m["payload"]["n"] for m in ada] == [1, 2]  # her own, with `self`; and Sam's
    assert [m["payload"]["n"] for m in sam] == [1]  # Ada's only: without `self`, not his own
    assert olive == [] and len(acks) == 1  # the ack: a reply ok to the push


def test_websocket_channels_counts_joins_leaves_and_a_killed_client(conn: psycopg.Connection, gateway: Gateway,
                                                                    tmp_path: Path) -> None:
    killed = subprocess.Popen([sys.executable, "-c", f"""
import asyncio
from realtime import AsyncRealtimeClient
async def main():
    client = AsyncRealtimeClient({gateway.url!r}, {token_for(conn, SAM.email)!r}, auto_reconnect=False)
    await client.connect()
    await client.channel({LOBBY!r}).subscribe()
    print("joined", flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""], stdout=subprocess.PIPE, text=True)

    async def scenario() -> list[dict[str, int]]:
        seen = []
        ada, tess = Listener(gateway, token_for(conn, ADA.email)), Listener(gateway, token_for(conn, TESS.email))
        await ada.join()
        await tess.join()
        assert killed.stdout.readline().strip() == "joined"
        await eventually(lambda: counts(conn).get("lobby") == 3)
        seen.append(counts(conn))
        await tess.channel.unsubscribe()  # a leave
        await eventually(lambda: counts(conn).get("lobby") == 2)
        seen.append(counts(conn))
        os.kill(killed.pid, signal.SIGKILL)  # a drop: no leave, the socket just ends
        await eventually(lambda: counts(conn).get("lobby") == 1)
        seen.append(counts(conn))
        for listener in (ada, tess):
            await listener.client.close()
        await eventually(lambda: counts(conn).get("lobby") == 0)
        return seen

    try:
        assert asyncio.run(scenario()) == [{"lobby": 3}, {"lobby": 2}, {"lobby": 1}]
    finally:
        killed.kill()
        killed.wait()


def test_a_stopped_gateway_counts_its_clients_out_and_two_on_free_ports_keep_their_own_counts(
        conn: psycopg.Connection, db_url: str) -> None:
    async def scenario() -> list[int]:
        seen = []
        first = await asyncio.to_thread(Gateway(db_url, port=0, poll_interval=0.05).start)
        listeners = [Listener(first, token_for(conn, who)) for who in (ADA.email, SAM.email, TESS.email)]
        for listener in listeners:
            await listener.join()
        await eventually(lambda: counts(conn).get("lobby") == 3)
        second = await asyncio.to_thread(Gateway(db_url, port=0, poll_interval=0.05).start)  # another port
        seen.append(counts(conn)["lobby"])  # its start took back nothing of the first's
        await asyncio.to_thread(first.stop)
        seen.append(counts(conn)["lobby"])  # the first, stopped, counted its three out
        await asyncio.to_thread(second.stop)
        for listener in listeners:
            await listener.client.close()
        return seen

    assert asyncio.run(scenario()) == [3, 0]


def test_two_quick_refreshes_leave_one_subscription(conn: psycopg.Connection, gateway: Gateway) -> None:
    open_lectures(conn)

    async def scenario() -> Listener:
        listener = Listener(gateway, token_for(conn, ADA.email))
        await listener.join()
        await listener.client.set_auth(token_for(conn, ADA.email, expires_in=3000))
        await listener.client.set_auth(token_for(conn, ADA.email, expires_in=2000))
        await asyncio.sleep(0.5)
        check_in(conn, SAM.email)
        await eventually(lambda: listener.changes)
        await asyncio.sleep(0.5)  # a second copy would have arrived by now
        await listener.client.close()
        return listener

    assert asyncio.run(scenario()).records() == [SAM.id]


def test_a_gateway_killed_and_started_again_takes_back_only_its_own_counts(
        conn: psycopg.Connection, db_url: str) -> None:
    conn.execute("insert into websocket_channels (session_id, channel_name, active_connections) "
                 "values (%s, 'lobby', 5)", [ENGINES_LECTURE])  # another writer's five
    port = free_port()
    command = [sys.executable, "-m", "attendance_kit.cli", "realtime", "serve", "--port", str(port),
               "--database-url", db_url]
    served = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert "Realtime gateway at" in served.stderr.readline()

        async def join_then_crash() -> None:
            listener = Listener(Gateway(db_url, port=port), token_for(conn, ADA.email))  # its url
            await listener.join()
            await eventually(lambda: counts(conn)["lobby"] == 6)
            served.send_signal(signal.SIGKILL)  # nobody is counted out
            served.wait(10)
            await listener.client.close()

        asyncio.run(join_then_crash())
        assert counts(conn)["lobby"] == 6
        with Gateway(db_url, port=port):
            assert counts(conn)["lobby"] == 5
    finally:
        served.kill()
        served.wait()


JS_DIR = Path(__file__).parent / "js"


@pytest.mark.skipif(shutil.which("node") is None or not (JS_DIR / "node_modules" / ".installed").is_file(),
                    reason="needs Node.js and `npm install` in tests/js (./kit test does it where npm is)")
def test_supabase_s_javascript_client_speaking_vsn_2_receives_the_same(conn: psycopg.Connection,
                                                                        gateway: Gateway) -> None:
    """realtime-js, whose default serializer is 2.0.0 (arrays), as the peer: Ada receives Sam's check-in, Olive
    nothing."""
    open_lectures(conn)
    clients = {who: subprocess.Popen(["node", "subscribe.mjs", gateway.url, token_for(conn, who), LOBBY,
                                      "attendance_records", "6"], cwd=JS_DIR, stdout=subprocess.PIPE, text=True)
               for who in (ADA.email, OLIVE.email)}
    try:
        for client in clients.values():  # each reports SUBSCRIBED on the join's reply, then the system message
            lines = [json.loads(client.stdout.readline()) for _ in range(2)]
            assert lines[0] == {"status": "SUBSCRIBED", "error": None}
            assert lines[1]["system"]["message"] == "Subscribed to PostgreSQL"
        check_in(conn, SAM.email)
        received = {who: [json.loads(line) for line in client.communicate(timeout=30)[0].splitlines()]
                    for who, client in clients.items()}
    finally:
        for client in clients.values():
            client.kill()
    (change,) = [line["change"] for line in received[ADA.email]]
    assert (change["eventType"], change["new"]["student_id"], change["old"]) == ("INSERT", SAM.id, {})
    assert received[OLIVE.email] == []


@pytest.mark.skipif(shutil.which("node") is None or not (JS_DIR / "node_modules" / ".installed").is_file(),
                    reason="needs Node.js and `npm install` in tests/js (./kit test does it where npm is)")
def test_realtime_js_s_filter_builder_and_select_are_taken_as_supabase_takes_them(conn: psycopg.Connection,
                                                                                 gateway: Gateway) -> None:
    """`postgresChangesFilter()` with four conditions (one negated) and a `select`: Ada receives Sam's
    check-in alone, its record narrowed to the selected column and the key."""
    open_lectures(conn)
    spec = {"filter": [["eq", "session_id", ENGINES_LECTURE], ["in", "student_id", [SAM.id, TESS.id]],
                       ["not", "student_id", "eq", TESS.id], ["is", "status", True]], "select": ["student_id"],
            "until": 1}
    client = subprocess.Popen(["node", "subscribe.mjs", gateway.url, token_for(conn, ADA.email), LOBBY,
                               "attendance_records", "20", json.dumps(spec)], cwd=JS_DIR, stdout=subprocess.PIPE,
                              text=True)
    try:
        lines = [json.loads(client.stdout.readline()) for _ in range(2)]
        assert lines == [{"status": "SUBSCRIBED", "error": None}, {"system": {
            "extension": "postgres_changes", "status": "ok", "message": "Subscribed to PostgreSQL", "channel": LOBBY}}]
        for student in (TESS, UMA, SAM):  # a wrong one would arrive before Sam's, the last
            check_in(conn, student.email)
        received = [json.loads(line) for line in client.communicate(timeout=30)[0].splitlines()]
    finally:
        client.kill()
    (change,) = [line["change"] for line in received]
    assert set(change["new"]) == {"id", "student_id"} and change["new"]["student_id"] == SAM.id


@pytest.mark.skipif(shutil.which("node") is None or not (JS_DIR / "node_modules" / ".installed").is_file(),
                    reason="needs Node.js and `npm install` in tests/js (./kit test does it where npm is)")
def test_realtime_js_waiting_for_its_subscription_is_subscribed_before_it_says_so_or_refused(
        conn: psycopg.Connection, gateway: Gateway) -> None:
    """`postgres_changes_options: {wait: true}`: SUBSCRIBED means the subscription is live, so a check-in made at
    once arrives; a bad filter fails the join itself (CHANNEL_ERROR with Supabase's reason)."""
    open_lectures(conn)

    def client(topic: str, filter: list[Any]) -> subprocess.Popen[str]:
        return subprocess.Popen(["node", "subscribe.mjs", gateway.url, token_for(conn, ADA.email), topic,
                                 "attendance_records", "20", json.dumps({"filter": filter, "wait": True,
                                                                         "until": 1})],
                                cwd=JS_DIR, stdout=subprocess.PIPE, text=True)

    good, bad = client(LOBBY, [["eq", "student_id", SAM.id]]), client("other", [["eq", "nope", "1"]])
    try:
        assert json.loads(good.stdout.readline()) == {"status": "SUBSCRIBED", "error": None}
        check_in(conn, SAM.email)  # at once: no wait for "Subscribed to PostgreSQL"
        received = [json.loads(line) for line in good.communicate(timeout=30)[0].splitlines()]
        refused = [json.loads(line) for line in bad.communicate(timeout=30)[0].splitlines()]
    finally:
        good.kill()
        bad.kill()
    # "Subscribed to PostgreSQL" follows the reply at once, as from Supabase; realtime-js does not always report it
    # to a 'system' listener then (seen under load).
    assert {line["system"]["message"] for line in received if "system" in line} <= {"Subscribed to PostgreSQL"}
    assert [line["change"]["new"]["student_id"] for line in received if "change" in line] == [SAM.id], received
    assert refused[0]["status"] == "CHANNEL_ERROR" and refused[0]["error"].startswith(
        "Error: RealtimeDisabledForConfiguration: Unable to subscribe to changes with given parameters. An "
        "exception happened")
    assert refused[0]["error"].endswith("invalid column for filter nope")


# --- bad input: raw sockets ----------------------------------------------------------------------------------


async def raw(gateway: Gateway, token: str, vsn: str = "1.0.0") -> websockets.ClientConnection:
    return await websockets.connect(f"{gateway.url}/websocket?apikey={token}&vsn={vsn}", max_size=None)


async def drain(ws: websockets.ClientConnection) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for _ in ws:
            pass


async def reply_to(ws: websockets.ClientConnection, ref: str) -> dict[str, Any]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message.get("ref") == ref:
            return message


def test_a_bad_connect_token_is_refused_before_the_upgrade(conn: psycopg.Connection, gateway: Gateway) -> None:
    async def attempt(token: str | None) -> tuple[int, dict[str, Any]]:
        query = f"?apikey={token}" if token else ""
        try:
            await websockets.connect(f"{gateway.url}/websocket{query}")
        except websockets.InvalidStatus as refused:
            return refused.response.status_code, json.loads(refused.response.body)
        raise AssertionError("connected")

    expired = sign({"role": "anon", "exp": int(time.time()) - 10})
    forged = sign({"role": "service_role", "exp": int(time.time()) + 60}, "another-secret-of-at-least-32-chars!")
    assert asyncio.run(attempt(None)) == (401, {"error": "API key is missing"})
    assert asyncio.run(attempt("not-a-jwt")) == (401, {"error": "The token provided is not a valid JWT"})
    assert asyncio.run(attempt(forged)) == (401, {"error": "Failed to validate JWT signature"})
    status, body = asyncio.run(attempt(expired))
    assert status == 401 and body["error"].startswith("Token has expired")
    endless = sign({"role": "anon", "exp": float("inf")})  # signed with the public default secret: still refused
    assert asyncio.run(attempt(endless)) == (401, {"error": "Fields `exp` and `iat` must be numbers"})


def test_joins_that_supabase_refuses_get_its_errors_and_the_socket_stays_usable(
        conn: psycopg.Connection, gateway: Gateway) -> None:
    token = token_for(conn, ADA.email)

    async def scenario() -> list[Any]:
        ws = await raw(gateway, token)
        answers = []
        for ref, entry in (("1", {"event": "*", "schema": "public", "table": "courses"}),
                           ("2", {"event": "*", "schema": "public", "table": "attendance_records",
                                  "filter": "session_id=foo.x"}),
                           ("3", {"event": "*", "schema": "public", "table": "attendance_records",
                                  "filter": "nope=eq.1"})):
            topic = f"realtime:bad{ref}"
            await ws.send(json.dumps({"topic": topic, "event": "phx_join", "ref": ref, "join_ref": ref,
                                      "payload": {"config": {"postgres_changes": [entry]}}}))
            answers.append((await reply_to(ws, ref))["payload"]["status"])
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if message["event"] == "system" and message["topic"] == topic:
                    answers.append(message["payload"]["message"])
                    break
        await ws.send(json.dumps({"topic": "realtime:x", "event": "nonsense", "payload": {}, "ref": "9"}))
        answers.append((await reply_to(ws, "9"))["payload"])
        await ws.send(json.dumps({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "10"}))
        answers.append((await reply_to(ws, "10"))["payload"]["status"])
        await ws.close()
        return answers

    answers = asyncio.run(scenario())
    assert answers[0] == "ok" and answers[1].startswith(
        "Unable to subscribe to changes with given parameters. Please check Realtime is enabled")
    assert answers[2] == "ok" and answers[3] == 'Error parsing `filter` params: ["foo", "x"]'
    assert answers[4] == "ok" and answers[5].endswith(
        '[event: *, schema: public, table: attendance_records, filters: [{"nope", "eq", "1", false}], '
        "select: nil]. Exception: ERROR P0001 (raise_exception) invalid column for filter nope")
    assert answers[6] == {"status": "error", "response": {"reason": "unmatched topic"}}
    assert answers[7] == "ok"


def test_what_json_allows_but_a_peer_cannot_take_never_reaches_the_others(
        conn: psycopg.Connection, gateway: Gateway) -> None:
    """A lone surrogate (valid JSON, unencodable as UTF-8) and NaN (Python's JSON, not JavaScript's)."""
    async def scenario() -> tuple[Any, Any, Any]:
        token = token_for(conn, SAM.email)
        sender, receiver = await raw(gateway, token), await raw(gateway, token, "2.0.0")
        for ws, join in ((sender, {"topic": "realtime:room", "event": "phx_join", "payload": {}, "ref": "1"}),
                         (receiver, ["1", "1", "realtime:room", "phx_join", {}])):
            await ws.send(json.dumps(join))
            await asyncio.wait_for(ws.recv(), 10)
        await sender.send('{"topic":"realtime:room","event":"broadcast","ref":"2","payload":'
                          '{"type":"broadcast","event":"odd","payload":{"text":"\\ud800","n":NaN}}}')
        await sender.send('{"topic":"realtime:room","event":"broadcast","ref":"3","payload":'
                          '{"type":"broadcast","event":"odd","payload":{"text":"\\ud800"}}}')
        received = json.loads(await asyncio.wait_for(receiver.recv(), 10))
        await sender.send(json.dumps({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "4"}))
        heartbeat = await reply_to(sender, "4")
        for ws in (sender, receiver):
            await ws.close()
        return received, heartbeat, receiver.close_code

    received, heartbeat, _ = asyncio.run(scenario())
    assert received == [None, None, "realtime:room", "broadcast",  # the NaN frame was dropped, as malformed
                        {"type": "broadcast", "event": "odd", "payload": {"text": "\ud800"}}]
    assert heartbeat["payload"]["status"] == "ok"  # both sockets carried on


def test_an_in_filter_of_more_than_a_hundred_values_is_refused(conn: psycopg.Connection, gateway: Gateway) -> None:
    async def scenario() -> str:
        ws = await raw(gateway, token_for(conn, ADA.email))
        values = ",".join(str(uuid.UUID(int=i)) for i in range(101))
        await ws.send(json.dumps({"topic": "realtime:many", "event": "phx_join", "ref": "1", "payload": {
            "config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "attendance_records",
                                             "filter": f"id=in.({values})"}]}}}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message["event"] == "system":
                await ws.close()
                return message["payload"]["message"]

    assert asyncio.run(scenario()).endswith("too many values for `in` filter. Maximum 100")


def test_garbage_floods_and_oversized_frames_end_only_their_own_socket(
        conn: psycopg.Connection, gateway: Gateway) -> None:
    open_lectures(conn)
    rng = random.Random(1234)

    def garbage() -> str | bytes:
        kind = rng.randrange(6)
        if kind == 0:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        if kind == 1:
            return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(0, 80)))
        if kind == 2:
            return json.dumps([rng.choice([None, "1", 3]), None, "realtime:x", rng.choice(["phx_join", "?"]), []])
        if kind == 3:
            return json.dumps({"topic": rng.choice(["phoenix", "realtime:", "realtime:y", 7]),
                               "event": rng.choice(["phx_join", "phx_leave", "access_token", "broadcast", "x"]),
                               "payload": rng.choice([{}, [], None, "s", {"config": {"postgres_changes": 5}},
                                                      {"access_token": "garbage"}]), "ref": str(rng.random())})
        if kind == 4:
            return json.dumps({"topic": "realtime:z", "event": "phx_join", "ref": "1", "payload": {
                "config": {"postgres_changes": [{"table": rng.choice(["attendance_records", "*", "nope"]),
                                                 "filter": rng.choice([None, "id=eq.", "a=b.c", "status=in.(x"])}]}}})
        return "{" * rng.randrange(1, 200)

    async def scenario() -> tuple[Listener, list[int | None]]:
        bystander = Listener(gateway, token_for(conn, ADA.email))
        await bystander.join()
        token = token_for(conn, SAM.email)
        closes = []
        for _ in range(4):  # random frames, at a pace under the rate limit: the socket lives on
            vsn = rng.choice(["1.0.0", "2.0.0"])
            ws = await raw(gateway, token, vsn)
            for _ in range(50):
                await ws.send(garbage())
                await asyncio.sleep(0.011)
            heartbeat = ({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "hb"} if vsn == "1.0.0"
                         else [None, "hb", "phoenix", "heartbeat", {}])
            await ws.send(json.dumps(heartbeat))
            answered = False
            while not answered:  # the heartbeat's reply comes, whatever the garbage brought before it
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                answered = (frame.get("ref") if vsn == "1.0.0" else frame[1]) == "hb"
            closes.append(ws.close_code)
            await ws.close()
        flood = await raw(gateway, token)
        reading = asyncio.create_task(drain(flood))  # it reads what it is sent, the close frame too
        try:
            for _ in range(5000):
                await flood.send(json.dumps({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": None}))
        except websockets.ConnectionClosed:
            pass
        await asyncio.wait_for(reading, 10)
        closes.append(flood.close_code)
        huge = await raw(gateway, token)
        await huge.send("x" * (6 * 1024 * 1024))
        await asyncio.wait_for(huge.wait_closed(), 10)
        closes.append(huge.close_code)
        check_in(conn, SAM.email)
        await eventually(lambda: bystander.changes)
        await bystander.client.close()
        return bystander, closes

    bystander, closes = asyncio.run(scenario())
    assert closes[:4] == [None] * 4  # garbage is ignored, as Supabase ignores a malformed frame
    assert closes[4] == 1008 and closes[5] == 1009  # a flood is closed; an oversized frame too
    assert bystander.records() == [SAM.id]
