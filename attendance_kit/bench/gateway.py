"""`attendance-kit bench gateway`: the Realtime gateway under load, beside the feed in-process at the same load.

The load is `bench realtime`'s (Ada and 499 students, ten check-ins per transaction, every subscriber on both
tables, RLS-checked): once with the feed in this process (`bench realtime`'s figures), once through the gateway,
which runs as `attendance-kit realtime serve` in a process of its own with N WebSocket clients in this one, each
a distinct user with its own token. The clients are lean: they speak the frames Supabase's clients speak (vsn
1.0.0, join with `postgres_changes` and `access_token`, heartbeats) and read each change's `commit_timestamp`.
Latency is the client's receive time minus the commit timestamp (one machine, one clock). Memory per idle
connection is the gateway process's resident memory with N clients joined and subscribed, less its memory before
they connected, over N.

`soak` runs one load for minutes through the gateway and reads its resident memory at the start, each minute and
at the end: a leak shows as growth the load does not explain. Only the teacher's latencies are kept then (every
change reaches her), the others' deliveries counted.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import websockets

from ..errors import KitError
from ..realtime.tokens import sign
from .realtime import STUDENTS, Load, Writer, commit_time, figures, in_process

TABLES = ("attendance_records", "session_analytics")
HEARTBEAT_INTERVAL = 25.0  # realtime-js's; the gateway closes a socket silent for a minute


def gateway(clients: int = 500, rates: tuple[int, ...] = (1000, 3000), seconds: float = 5.0,
            database_url: str | None = None, runs: int = 2) -> dict[str, Any]:
    """Per rate, `runs` alternating pairs (the gateway, then the feed in-process; the table grows as they go),
    and the ratio of their median p95s."""
    with Load(database_url, changes=sum(rates) * seconds * 2 * runs, students=max(STUDENTS, clients - 1)) as load:
        result = load.describe(seconds)
        with Served(load.url) as served:
            result["gateway_idle_kib_per_connection"] = asyncio.run(_idle_memory(served, load, clients))
        for rate in rates:
            figures: dict[str, Any] = {}
            for run in range(1, runs + 1):
                with Served(load.url) as served:
                    figures[f"through the gateway, run {run}"] = asyncio.run(
                        _through_gateway(served, load, clients, rate, seconds))
                figures[f"in process, run {run}"] = in_process(load, clients, rate, seconds)  # no gateway beside
            result[f"{clients} subscribers @ {rate}/s"] = figures
            result[f"gateway p95 / in-process p95 @ {rate}/s (medians)"] = round(
                _median_p95(figures, "through the gateway") / _median_p95(figures, "in process"), 2)
        result["target"] = ("500 WebSocket clients: >= 1000 changes/s delivered, p95 <= 250 ms commit to client, "
                            "<= 30% over the in-process p95; idle connection <= 50 KiB")
        return result


def _median_p95(figures: dict[str, Any], side: str) -> float:
    return statistics.median(run["p95_ms"] for name, run in figures.items() if name.startswith(side))


def cpu_seconds(pid: int) -> float:
    """The CPU time a process of this machine has used so far, user and system; 0 if it has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):  # gone before or while it was read
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Served:
    """`attendance-kit realtime serve` on a free port, in a process of its own."""

    def __init__(self, database_url: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/realtime/v1/websocket"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "attendance_kit.cli", "realtime", "serve", "--port", str(port),
             "--database-url", database_url], stderr=subprocess.PIPE, text=True)
        first = self.process.stderr.readline()
        if "Realtime gateway at" not in first:
            self.process.kill()
            raise KitError(f"the gateway did not start: {first.strip() or 'no output'}")
        # Its log read as it comes (a full pipe would stall the gateway), the last lines kept.
        self.log: collections.deque[str] = collections.deque(maxlen=20)
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self) -> None:
        for line in self.process.stderr:
            self.log.append(line.rstrip())

    def resident_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1])

    def cpu_seconds(self) -> float:
        """The CPU time the gateway's process has used so far, user and system (all its threads)."""
        return cpu_seconds(self.process.pid)

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(30)


class _Client:
    """A lean client: connects with its token, joins one channel for both tables, records each change's
    latency."""

    def __init__(self, url: str, claims: dict[str, Any], *, timed: bool = True) -> None:
        """`timed`: keep each change's latency (else only count the changes)."""
        self.token = sign({**claims, "exp": int(time.time()) + 3600})
        self.url = f"{url}?apikey={self.token}&vsn=1.0.0"
        self.timed = timed
        self.latencies: list[float] = []
        self.changes = 0
        self.subscribed = asyncio.Event()
        self.ws: websockets.ClientConnection | None = None

    async def join(self, topic: str) -> None:
        self.ws = await websockets.connect(self.url, max_size=None, ping_interval=None)
        entries = [{"event": "*", "schema": "public", "table": table} for table in TABLES]
        await self.ws.send(json.dumps({"topic": topic, "event": "phx_join", "ref": "1", "join_ref": "1", "payload": {
            "config": {"postgres_changes": entries}, "access_token": self.token}}))

    async def read(self) -> None:
        assert self.ws is not None
        async for frame in self.ws:
            message = json.loads(frame)
            if message["event"] == "postgres_changes":
                if self.timed:
                    self.latencies.append(time.time() - commit_time(message["payload"]["data"]))
                self.changes += 1
            elif message["event"] == "system" and message["payload"]["status"] == "ok":
                self.subscribed.set()


async def heartbeats(clients: Sequence[Any]) -> None:
    """Supabase's clients' heartbeat, for every client (anything with a `ws`) connected, until cancelled."""
    for ref in itertools.count(1):
        await asyncio.sleep(HEARTBEAT_INTERVAL)
        frame = json.dumps({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": str(ref)})
        await asyncio.gather(*(client.ws.send(frame) for client in clients if client.ws is not None),
                             return_exceptions=True)


async def _connected(served: Served, load: Load, count: int, *, timed: bool = True
                     ) -> tuple[list[_Client], list[asyncio.Task[None]]]:
    """`count` clients joined and subscribed; the first (the teacher) always timed, the others if `timed`."""
    clients = [_Client(served.url, claims, timed=timed or i == 0) for i, claims in enumerate(load.claims[:count])]
    for i, client in enumerate(clients):
        await client.join(f"realtime:bench-{i}")
    readers = [asyncio.create_task(client.read()) for client in clients]
    await asyncio.wait_for(asyncio.gather(*(client.subscribed.wait() for client in clients)), 120)
    return clients, readers


async def closed(clients: list[Any], readers: list[asyncio.Task[None]]) -> None:
    """Every client's socket closed (at once: thousands, one after the other, take long), its reader ended."""
    await asyncio.gather(*(client.ws.close() for client in clients if client.ws is not None))
    await asyncio.gather(*readers, return_exceptions=True)


async def _idle_memory(served: Served, load: Load, count: int) -> float:
    before = served.resident_kib()
    clients, readers = await _connected(served, load, count)
    await asyncio.sleep(1)
    during = served.resident_kib()
    await closed(clients, readers)
    return round((during - before) / count, 1)


async def _through_gateway(served: Served, load: Load, count: int, rate: int, seconds: float) -> dict[str, Any]:
    load.vacuum()
    clients, readers = await _connected(served, load, count)
    ada = clients[0]  # the teacher: every change reaches her
    with Writer(load.url, rate, seconds, load.checkins) as writer:
        await asyncio.to_thread(writer.write)  # warm up: the authorisation functions are built outside it
        await _settled(ada)
        for client in clients:
            client.latencies.clear()
        ada.changes = 0
        writer.start()
        started = time.monotonic()
        while ada.changes < writer.changes or writer.is_alive():
            if not writer.is_alive() and time.monotonic() - started > 4 * seconds:
                break  # far behind: report what was done
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
    await closed(clients, readers)
    return figures(writer, ada.changes, elapsed, [latency for client in clients for latency in client.latencies])


async def _caught_up(client: _Client, changes: int, seconds: float = 60) -> None:
    """Until the client has every change (or `seconds` passed: then what it lacks is counted lost)."""
    deadline = time.monotonic() + seconds
    while client.changes < changes and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


async def _settled(client: _Client) -> None:
    """Until nothing has arrived for half a second."""
    seen = -1
    while client.changes != seen:
        seen = client.changes
        await asyncio.sleep(0.5)


def soak(clients: int = 500, rate: int = 1000, seconds: float = 300.0, database_url: str | None = None
         ) -> dict[str, Any]:
    """One load for `seconds` through the gateway: what was delivered, and the gateway's resident memory at the
    start (clients joined, warmed up), each minute and at the end."""
    with Load(database_url, changes=rate * seconds * 1.2, students=max(STUDENTS, clients - 1)) as load:
        result = load.describe(seconds)
        with Served(load.url) as served:
            result[f"{clients} subscribers @ {rate}/s for {seconds:g} s"] = asyncio.run(
                _soak(served, load, clients, rate, seconds))
        result["target"] = "resident memory at the end within noise of the start (no leak)"
        return result


async def _soak(served: Served, load: Load, count: int, rate: int, seconds: float) -> dict[str, Any]:
    clients, readers = await _connected(served, load, count, timed=False)
    beating = asyncio.create_task(heartbeats(clients))  # minutes: past the gateway's silence timer
    ada = clients[0]
    resident = {}
    with Writer(load.url, rate, seconds, load.checkins) as writer:
        await asyncio.to_thread(writer.write)
        await _settled(ada)
        ada.latencies.clear()
        ada.changes = 0
        resident["start"] = served.resident_kib()
        writer.start()
        started = time.monotonic()
        while writer.is_alive():
            await asyncio.sleep(1)
            minute = int((time.monotonic() - started) // 60)
            if minute and f"{minute} min" not in resident:
                resident[f"{minute} min"] = served.resident_kib()
        elapsed = time.monotonic() - started
        await _caught_up(ada, writer.changes)
        resident["end"] = served.resident_kib()
    beating.cancel()
    await closed(clients, readers)
    run = figures(writer, ada.changes, elapsed, ada.latencies)
    run["teacher_lost"] = writer.changes - ada.changes
    run["deliveries"] = sum(client.changes for client in clients)
    run["resident_kib"] = resident
    run["resident_growth_percent"] = round(100 * (resident["end"] - resident["start"]) / resident["start"], 1)
    return run
