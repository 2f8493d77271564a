"""The realtime server through what a developer's machine does to the database: the server restarted under the
gateway's clients (Supabase's Python and JavaScript clients) and under `listen`, and the gateway's connections
terminated one by one. The sockets stay, channels hear that changes are unavailable, then are subscribed again;
a check-in after the return arrives once; websocket_channels counts the joined channels again, exactly."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from test_gateway import JS_DIR, LOBBY, Listener, check_in, counts, eventually, free_port, open_lectures

from attendance_kit import connect, load_demo_data, migrate
from attendance_kit.demo import ADA, COMPILERS_LECTURE, ENGINES_LECTURE, PAT, SAM, TESS, UMA
from attendance_kit.realtime.gateway import Gateway
from attendance_kit.realtime.tokens import token_for
from attendance_kit.server import Cluster, port_is_free

SUBSCRIBED = "Subscribed to PostgreSQL"
UNAVAILABLE = "Realtime was unable to connect to the project database"


@pytest.fixture(scope="module")
def cluster(server) -> Iterator[Cluster]:
    """A cluster of the module's own, to restart: the run's server is every other test's."""
    state = Path(tempfile.mkdtemp(dir=server.scratch))
    state.chmod(0o755)
    own = Cluster(state)
    try:
        with connect(own.up()) as conn:
            migrate(conn)
            load_demo_data(conn)
        yield own
    finally:
        own.down()


def start_again(cluster: Cluster) -> None:
    deadline = time.monotonic() + 10
    while not port_is_free(cluster.port) and time.monotonic() < deadline:  # the old socket may linger
        time.sleep(0.1)
    cluster.up()


def system_messages(listener: Listener, text: str) -> int:
    return sum(text in message.message for message in listener.system)


def test_the_python_client_keeps_its_channel_through_a_restart_and_receives_the_next_check_in_once(
        cluster: Cluster) -> None:
    with connect(cluster.url) as conn:
        open_lectures(conn)
        tokens = {who: token_for(conn, who) for who in (ADA.email, TESS.email)}
    gateway = Gateway(cluster.url, port=0, poll_interval=0.05).start()

    async def scenario() -> tuple[Listener, Listener, list[Any]]:
        ada, tess = Listener(gateway, tokens[ADA.email]), Listener(gateway, tokens[TESS.email])
        await ada.join()
        await tess.join()
        heard: list[Any] = []
        refusals: list[str] = []
        room = ada.client.channel("room")
        room.on_broadcast("wave", heard.append)
        await room.subscribe()
        with connect(cluster.url) as conn:
            await eventually(lambda: counts(conn).get("lobby") == 2)

        await asyncio.to_thread(cluster.down)
        await eventually(lambda: not gateway.state.database_up)  # said to no client, as in Supabase
        # Between clients, broadcast goes on without the database; a private join, which asks the policies, waits.
        away = tess.client.channel("room")
        await away.subscribe()
        await away.send_broadcast("wave", {"while": "the database is away"})
        await eventually(lambda: heard)
        private = tess.client.channel(f"session:{ENGINES_LECTURE}:status", {"config": {"private": True}})
        await private.subscribe(lambda state, error: refusals.append(str(error or "")))
        await eventually(lambda: refusals)
        await private.unsubscribe()

        await asyncio.to_thread(start_again, cluster)
        await eventually(lambda: system_messages(ada, SUBSCRIBED) >= 2 and system_messages(tess, SUBSCRIBED) >= 2,
                         seconds=20)
        with connect(cluster.url) as conn:
            check_in(conn, SAM.email)
            await eventually(lambda: ada.records())
            await asyncio.sleep(0.5)  # time for a duplicate to arrive, if one were coming
            await eventually(lambda: counts(conn).get("lobby") == 2)
        for listener in (ada, tess):
            await listener.client.close()
        return ada, tess, heard, refusals

    try:
        ada, tess, heard, refusals = asyncio.run(scenario())
    finally:
        gateway.stop()
    assert ada.records() == [SAM.id]  # the teacher sees the check-in, once
    assert tess.records() == []  # a classmate's check-in: RLS still decides, after the return too
    assert heard[0]["payload"] == {"while": "the database is away"}
    assert UNAVAILABLE in refusals[0] and refusals[0].count("UnableToConnectToProject") == 1
    assert ada.states == tess.states == [("SUBSCRIBED", "")]  # the channels themselves never erred


class Lines:
    """A child process's stdout, one JSON line at a time, with a timeout."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process, self.seen = process, []
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(target=lambda: [self._queue.put(line) for line in process.stdout], daemon=True).start()

    def until(self, wanted: Callable[[Any], bool], seconds: float = 20) -> Any:
        deadline = time.monotonic() + seconds
        while True:
            line = json.loads(self._queue.get(timeout=max(0.01, deadline - time.monotonic())))
            self.seen.append(line)
            if wanted(line):
                return line


def system_line(text: str) -> Callable[[Any], bool]:
    return lambda line: text in line.get("system", {}).get("message", "")


@pytest.mark.skipif(shutil.which("node") is None or not (JS_DIR / "node_modules" / ".installed").is_file(),
                    reason="needs Node.js and `npm install` in tests/js (./kit test does it where npm is)")
def test_the_javascript_client_keeps_its_socket_through_a_restart_and_receives_the_next_check_in_once(
        cluster: Cluster) -> None:
    with connect(cluster.url) as conn:
        open_lectures(conn)
        token = token_for(conn, ADA.email)
    gateway = Gateway(cluster.url, port=0, poll_interval=0.05).start()
    client = subprocess.Popen(["node", "subscribe.mjs", gateway.url, token, LOBBY, "attendance_records", "60"],
                              cwd=JS_DIR, stdout=subprocess.PIPE, text=True)
    try:
        lines = Lines(client)
        lines.until(system_line(SUBSCRIBED))
        cluster.down()
        start_again(cluster)
        lines.until(system_line(SUBSCRIBED))  # again, once the gateway is back
        with connect(cluster.url) as conn:
            check_in(conn, UMA.email)
            change = lines.until(lambda line: "change" in line)["change"]
            time.sleep(0.5)  # time for a duplicate to arrive, if one were coming
            assert counts(conn).get("lobby") == 1
    finally:
        client.kill()
        client.wait()
        gateway.stop()
    assert (change["eventType"], change["new"]["student_id"]) == ("INSERT", UMA.id)
    rest = [json.loads(line) for line in client.stdout]
    assert [line for line in lines.seen + rest if "change" in line] == [{"change": change}]
    assert lines.seen[0] == {"status": "SUBSCRIBED", "error": None}
    assert not any(line.get("status") not in (None, "SUBSCRIBED") for line in lines.seen + rest)


def test_listen_says_the_database_went_away_and_resumes_when_it_is_back(cluster: Cluster) -> None:
    command = [sys.executable, "-m", "attendance_kit.cli", "listen", "--as", ADA.email, "--table",
               "attendance_records", "--database-url", cluster.url, "--seconds", "60"]
    listening = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert listening.stderr.readline().startswith("listening as ")
        cluster.down()
        assert "lost" in listening.stderr.readline()
        start_again(cluster)
        assert "back" in listening.stderr.readline()
        with connect(cluster.url) as conn:
            open_lectures(conn)
            check_in(conn, PAT.email, COMPILERS_LECTURE)  # Grace's lecture: Ada must not see it
            check_in(conn, TESS.email)
        event = json.loads(listening.stdout.readline())
    finally:
        listening.kill()
        listening.wait()
    assert (event["type"], event["record"]["student_id"]) == ("INSERT", TESS.id)


def gateway_backends(conn: psycopg.Connection) -> list[int]:
    """The gateway's connections to the test's database: the slot's first."""
    return [pid for (pid,) in conn.execute(
        "select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() "
        "and backend_type = 'client backend' "
        "order by pid not in (select active_pid from pg_replication_slots where active_pid is not null)")]


def test_the_gateway_recovers_from_each_of_its_connections_terminated(conn: psycopg.Connection,
                                                                       db_url: str) -> None:
    """The slot's connection: a new slot, the channel subscribed again. Its other connection: opened again before
    it is next used, with nothing lost and nothing to say."""
    open_lectures(conn)
    gateway = Gateway(db_url, port=0, poll_interval=0.05).start()

    async def scenario() -> tuple[Listener, list[int]]:
        ada = Listener(gateway, token_for(conn, ADA.email))
        await ada.join()
        slot, other = gateway_backends(conn)
        conn.execute("select pg_terminate_backend(%s, 5000)", [slot])
        await eventually(lambda: system_messages(ada, SUBSCRIBED) == 2)
        check_in(conn, SAM.email)
        await eventually(lambda: len(ada.records()) == 1)
        conn.execute("select pg_terminate_backend(%s, 5000)", [gateway_backends(conn)[1]])
        check_in(conn, TESS.email)  # committed while the gateway has no second connection yet
        await eventually(lambda: len(ada.records()) == 2)
        await eventually(lambda: counts(conn).get("lobby") == 1)
        await ada.client.close()
        return ada, [slot, other, *gateway_backends(conn)]

    try:
        ada, backends = asyncio.run(scenario())
    finally:
        gateway.stop()
    assert ada.records() == [SAM.id, TESS.id]
    assert system_messages(ada, SUBSCRIBED) == 2 and ada.states == [("SUBSCRIBED", "")]
    assert len(set(backends)) == 4  # each terminated connection was replaced by a new one


def test_a_feed_that_falls_behind_says_so_once_and_again_once_it_caught_up(
        conn: psycopg.Connection, db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    open_lectures(conn)
    conn.execute("create function public.slowly() returns boolean language sql as 'select false from pg_sleep(1)'")
    conn.execute("create policy slowly on attendance_records as restrictive for select to authenticated "
                 "using (public.slowly() is not null)")  # lets everything through, after a second a row
    with Gateway(db_url, port=0, poll_interval=0.05, behind_after=0.5) as gateway:
        async def scenario() -> Listener:
            ada = Listener(gateway, token_for(conn, ADA.email))
            await ada.join()
            check_in(conn, SAM.email)  # authorised slowly: delivered late
            await eventually(lambda: len(ada.records()) == 1)
            conn.execute("drop policy slowly on attendance_records")
            check_in(conn, TESS.email)
            await eventually(lambda: len(ada.records()) == 2)
            await ada.client.close()
            return ada

        ada = asyncio.run(scenario())
    said = [record.getMessage() for record in caplog.records if "the change feed " in record.getMessage()]
    assert ada.records() == [SAM.id, TESS.id]  # late, not lost
    assert said[0].startswith("realtime gateway: the change feed is ") and "s behind the database" in said[0]
    assert said[-1].startswith("realtime gateway: the change feed has caught up")
    assert all(("caught up" in line) == (n % 2 == 1) for n, line in enumerate(said))  # each change of state, once


def test_a_new_reason_for_staying_away_is_said_once(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """The loss is said, then each new reason the database stays away (not each attempt)."""
    password = sql.Literal(cluster.password_file.read_text().strip())
    with Gateway(cluster.url, port=0, poll_interval=0.05), connect(cluster.url) as conn:
        try:
            conn.execute("alter role postgres password 'not-the-url-s'")
            conn.execute("select pg_terminate_backend(pid, 5000) from pg_stat_activity "
                         "where pid <> pg_backend_pid() and backend_type = 'client backend'")
            deadline = time.monotonic() + 10
            while not any("reconnecting" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the loss was never said"
                time.sleep(0.05)
            time.sleep(0.5)  # its first attempts (0.1 s, 0.3 s) fail on the password: the loss's own reason
            conn.execute(sql.SQL("alter role postgres nologin password {}").format(password))  # another reason
            deadline = time.monotonic() + 10
            while not any("not permitted to log in" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the new reason was never said"
                time.sleep(0.05)
        finally:
            conn.execute(sql.SQL("alter role postgres login password {}").format(password))
        deadline = time.monotonic() + 10
        while not any("the database is back" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the gateway never came back"
            time.sleep(0.05)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("realtime gateway: still without")]
    assert len(said) == 1 and "not permitted to log in" in said[0]


def test_realtime_serve_on_the_kit_s_cluster_keeps_its_client_through_db_reset(cluster: Cluster) -> None:
    """A newcomer's session: `./kit realtime serve` on the kit's cluster (no URL), an app subscribed, `./kit db
    reset` in another terminal (a new cluster, a new password): the next check-in arrives, nothing restarted."""
    env = {name: value for name, value in os.environ.items() if name != "ATTENDANCE_KIT_DATABASE_URL"}
    env["ATTENDANCE_KIT_STATE_DIR"] = str(cluster.state_dir)
    kit = [sys.executable, "-m", "attendance_kit.cli"]
    port = free_port()
    served = subprocess.Popen([*kit, "realtime", "serve", "--port", str(port)], env=env, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert "Realtime gateway at" in served.stderr.readline()

        async def scenario() -> Listener:
            with connect(cluster.url) as conn:
                listener = Listener(Gateway(port=port), token_for(conn, ADA.email))  # the served gateway's URL
            await listener.join()
            before = cluster.url
            reset = await asyncio.to_thread(subprocess.run, [*kit, "db", "reset"], env=env, capture_output=True,
                                            text=True)
            assert reset.returncode == 0, reset.stderr
            assert cluster.url != before  # another cluster: another password
            await eventually(lambda: system_messages(listener, SUBSCRIBED) == 2, seconds=30)
            with connect(cluster.url) as conn:
                open_lectures(conn)
                check_in(conn, SAM.email)
                await eventually(lambda: listener.records() == [SAM.id])
                await eventually(lambda: counts(conn) == {"lobby": 1})
            await listener.client.close()
            return listener

        listener = asyncio.run(scenario())
    finally:
        served.terminate()
        served.wait(30)
    assert listener.states == [("SUBSCRIBED", "")]
