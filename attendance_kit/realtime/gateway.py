"""The gateway: Supabase Realtime's WebSocket protocol in front of the change feed, so Supabase's own clients (the
Python `realtime`, `@supabase/realtime-js`) subscribe to the kit as to a Supabase project.

`Gateway` is the asyncio server (the `websockets` library) at `/realtime/v1/websocket` and `/socket/websocket`,
and only wires the gateway's parts together:

- admission.py: the connect check before the upgrade (a refusal is HTTP with `{"error": ...}`, as from Supabase);
- transport.py: each socket's receiving, rate, silence timer and queue of outgoing frames;
- protocol.py: the frames, in the socket's serializer;
- channel_state.py: what each message, database result and expired token does, without I/O (who a topic's
  messages reach: topics.py); its outputs are sent, submitted and timed here;
- worker.py: the database worker, the thread that owns the one `Realtime` and runs every database call (private
  channels' policy checks among them: topic_policies.py);
- fanout.py: each poll's deliveries, and its broadcasts from the database (broadcasts.py), as frames.

A database that goes away (a restart, `db reset`) is waited for: the sockets stay, and channels with
postgres_changes are subscribed again once it is back (worker.py, channel_state.py). A change feed that fails otherwise
stops the gateway (its error is `serve`'s) rather than leave it hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from ..errors import KitError, one_line
from . import protocol
from .admission import Connect, check_connect
from .broadcasts import PUBLICATION as BROADCAST_PUBLICATION
from .broadcasts import Broadcast
from .channel_model import Channel, CheckPolicies, Client, Command, DatabaseUnavailable, Output, Subscribe
from .channel_state import ChannelState
from .fanout import broadcast_frames, change_frames
from .feed import POLL_INTERVAL
from .protocol import BadFrame
from .tokens import DEFAULT_JWT_SECRET
from .transport import Transport
from .wire import json_value
from .worker import BEHIND, DatabaseWorker, Delivery, Reconcile

log = logging.getLogger(__package__)

PUBLICATION = "supabase_realtime"  # the publication Supabase Realtime reads
MAX_FRAME_BYTES = 5 * 1024 * 1024  # Supabase's max_frame_size


class Gateway:
    """Supabase Realtime's WebSocket endpoint for the change feed of one database.

    `await gateway.serve()` runs it until cancelled; `gateway.start()` runs it on a thread of its own (from a
    notebook or a test) and returns once it listens; `stop()` or the context manager ends it. Port 0 takes a
    free port (then `url` says which).
    """

    def __init__(self, database_url: str | None = None, *, host: str = "127.0.0.1", port: int = 4000,
                 jwt_secret: str = DEFAULT_JWT_SECRET, publication: str = PUBLICATION,
                 broadcast_publication: str = BROADCAST_PUBLICATION, poll_interval: float = POLL_INTERVAL,
                 behind_after: float = BEHIND) -> None:
        """`publication`: the tables' (postgres_changes); `broadcast_publication`: realtime.messages' (Broadcast
        from Database), read on the same slot; `behind_after`: seconds from commit to delivery beyond which the
        gateway logs that its change feed fell behind (and again once it caught up)."""
        self.database_url = database_url
        self.host, self.port = host, port
        self.jwt_secret = jwt_secret
        self.publication, self.broadcast_publication = publication, broadcast_publication
        self.poll_interval, self.behind_after = poll_interval, behind_after
        self.name = ""  # whose counts websocket_channels' bookkeeping holds: host:port, once listening
        self.state = ChannelState(jwt_secret)
        # Checked, not yet handled (weakly: a handshake that fails after the check is never handled).
        self._connecting: weakref.WeakKeyDictionary[ServerConnection, Connect] = weakref.WeakKeyDictionary()
        self._transports: dict[Client, Transport] = {}
        self._expiries: dict[Channel, asyncio.TimerHandle] = {}
        self._reconciled: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None
        self._worker: DatabaseWorker | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """What Supabase's clients take: they add `/websocket` themselves."""
        return f"ws://{self.host}:{self.port}/realtime/v1"

    # --- running --------------------------------------------------------------------------------------------

    async def serve(self, on_listening: Callable[[], None] | None = None) -> None:
        """Run until cancelled or `stop()`; the worker starts first, so a bad database fails before listening."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._worker = DatabaseWorker(self.database_url, self.publication, self.broadcast_publication,
                                      self.poll_interval, on_delivered=self._soon(self._deliver),
                                      on_broadcasts=self._soon(self._broadcast), on_done=self._soon(self._done),
                                      on_lost=self._soon(lambda _loss: self.state.feed_lost()),
                                      on_back=self._soon(lambda: self._apply(self.state.feed_back())),
                                      on_failure=self._soon(self._fail), behind_after=self.behind_after)
        self._worker.start()
        await asyncio.to_thread(self._worker.ready.wait)
        if self._worker.error is not None:
            raise self._worker.error
        try:
            async with await self._listen() as server:
                self.port = next(iter(server.sockets)).getsockname()[1]  # port 0: the one the system chose
                self.name = f"{socket.gethostname()}:{self.port}"
                self._reconciled = self._loop.create_future()
                self._worker.submit(Reconcile(self.name))  # before any client: take back a crash's counts
                await self._reconciled
                if on_listening is not None:
                    on_listening()
                await self._stopping.wait()
        finally:
            self._worker.stop()  # after the server closed: the sockets' last commands are queued before it
            await asyncio.to_thread(self._worker.join)
        if self._failure is not None:
            raise KitError(f"the gateway stopped: its change feed failed: {one_line(self._failure)}")

    async def _listen(self) -> Server:
        try:
            return await serve(self._handle, self.host, self.port, process_request=self._check_connect,
                               max_size=MAX_FRAME_BYTES, ping_interval=None, compression=None, close_timeout=5)
        except OSError as error:
            raise KitError(f"cannot listen on {self.host}:{self.port}: {one_line(error)} "
                           "(pass another --port)") from None

    def start(self, timeout: float = 30) -> Gateway:
        """Serve on a thread of its own; return once it listens (or raise why it cannot)."""
        listening, failure = threading.Event(), []

        def run() -> None:
            try:
                asyncio.run(self.serve(on_listening=listening.set))
            except BaseException as error:  # handed to the caller below
                failure.append(error)
                listening.set()

        self._thread = threading.Thread(target=run, name="kit-realtime-gateway", daemon=True)
        self._thread.start()
        if not listening.wait(timeout):
            raise KitError(f"the gateway did not start listening within {timeout:g} s")
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(30)

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the sockets ----------------------------------------------------------------------------------------

    def _check_connect(self, connection: ServerConnection, request: Request) -> Response | None:
        """Before the upgrade, as Supabase: the path, then the connect token; a refusal is HTTP + JSON."""
        checked = check_connect(request.path, request.headers, self.jwt_secret)
        if isinstance(checked, Connect):
            self._connecting[connection] = checked
            return None
        data = json.dumps({"error": checked.error}, default=json_value).encode()
        headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return Response(checked.status.value, checked.status.phrase, headers, data)

    async def _handle(self, ws: ServerConnection) -> None:
        """The receive loop: each frame through the channel state, until the socket ends."""
        connect = self._connecting.pop(ws)
        client = self.state.connect(connect.token, connect.vsn)
        transport = self._transports[client] = Transport(ws, connect.vsn)
        transport.start()
        try:
            while (frame := await transport.receive()) is not None:
                if not transport.within_rate():
                    self._apply(self.state.flooded(client))
                    await transport.close(1008, "Too many messages per second", flush=True)
                    break
                try:
                    message = protocol.decode(frame, connect.vsn)
                except BadFrame as bad:
                    log.info("realtime gateway: ignored a malformed frame (%s)", bad)
                    continue
                self._apply(self.state.receive(client, message, time.time()))
        finally:
            self._apply(self.state.disconnect(client))
            del self._transports[client]
            await transport.close()

    def _apply(self, out: Output) -> None:
        """What the channel state decided: messages sent, commands to the database worker, expiries timed."""
        for client, message in out.messages:
            transport = self._transports.get(client)
            if transport is not None:
                transport.send(message)
        for command in out.commands:
            self._worker.submit(command)
        for channel, expires_at in out.expiries:
            timer = self._expiries.pop(channel, None)
            if timer is not None:
                timer.cancel()
            if expires_at is not None:
                self._expiries[channel] = self._loop.call_later(max(0.0, expires_at - time.time()), self._expire,
                                                                channel)

    def _expire(self, channel: Channel) -> None:
        self._expiries.pop(channel, None)
        self._apply(self.state.expire(channel, time.time()))

    # --- the database worker's news, on the event loop ------------------------------------------------------

    def _soon(self, callback: Callable[..., None]) -> Callable[..., None]:
        """`callback`, called from the worker's thread, run on the event loop (unless it has ended: then nobody
        is waiting)."""
        loop = self._loop

        def call_soon(*args: Any) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, *args)

        return call_soon

    def _deliver(self, delivered: Delivery) -> None:
        self._queue(change_frames(delivered))

    def _broadcast(self, broadcasts: list[Broadcast]) -> None:
        self._queue(broadcast_frames(self.state.database_broadcasts(broadcasts)))

    def _queue(self, frames: Iterator[tuple[Client, str]]) -> None:
        for client, frame in frames:
            transport = self._transports.get(client)
            if transport is not None:
                transport.queue(frame)

    def _done(self, command: Command | Reconcile, result: Any, error: Exception | None) -> None:
        unavailable = isinstance(error, DatabaseUnavailable)  # the channel state hears of it as a whole
        if isinstance(command, Subscribe):
            self._apply(self.state.subscription_done(command, error))
        elif isinstance(command, CheckPolicies):
            if error is not None and not unavailable:  # a policy that raised: this user is refused, nobody else
                log.warning("realtime gateway: RlsPolicyError on %s: %s", command.channel.sub_topic, one_line(error))
            self._apply(self.state.policies_checked(command, result, error))
        elif isinstance(command, Reconcile):
            if error is not None:
                self._reconciled.set_exception(error)
            else:
                self._reconciled.set_result(None)
        elif error is not None and not unavailable:
            log.warning("realtime gateway: %s", one_line(error))

    def _fail(self, error: Exception) -> None:
        """The change feed cannot go on: stop serving, and say why."""
        self._failure = error
        self._stopping.set()
