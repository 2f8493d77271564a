"""Step 6, the gateway: Supabase Realtime's WebSocket protocol in front of the change feed, so Supabase's own
clients (the Python `realtime`, `@supabase/realtime-js`) subscribe to the kit as to a Supabase project.

The outermost layer, sockets and protocol only: what a subscriber receives is decided by the feed (delivery.py,
Supabase's rules), its entries are checked by subscriptions.py, its tokens by tokens.py, and websocket_channels is
kept by channels.py. The wire format is protocol.py's. Here:

- `Gateway`: the asyncio server (the `websockets` library) at `/realtime/v1/websocket` and `/socket/websocket`.
  The connect token (`apikey` in the query or an `x-api-key` header) is checked before the upgrade; a refused
  one gets HTTP 401 with `{"error": ...}`, as from Supabase.
- `_Connection`: one socket, its serializer (`vsn`), its joined channels, a queue of outgoing frames written by
  its own task (a slow client fills its queue and is closed; it never holds up the others), its silence timer
  (60 s, as Supabase) and its message rate (over `MAX_MESSAGES_PER_SECOND` its channels are shut down with
  Supabase's "Too many messages per second" and the socket is closed).
- `_Channel`: a joined topic: its `postgres_changes` entries and their ids, its token's claims and expiry, its
  broadcast settings, its subscriber in the feed.
- `_FeedThread`: the one `Realtime` of the gateway, on its own thread: every database call (subscribing,
  re-subscribing with refreshed claims, websocket_channels) runs there, in turn, between polls, so all sockets
  share one connection (plus delivery's lanes); each poll's deliveries come back to the event loop in one batch
  and go out as one frame per channel per change, with the ids of the entries it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import socket
import threading
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..errors import KitError, one_line
from . import channels, protocol
from .client import Realtime
from .feed import POLL_INTERVAL
from .protocol import BadFrame, Message
from .subscriptions import Delivered, Subscriber, json_value
from .tokens import DEFAULT_JWT_SECRET, TokenRefused, verify

log = logging.getLogger(__package__)

PATHS = ("/realtime/v1/websocket", "/socket/websocket")
PUBLICATION = "supabase_realtime"  # the publication Supabase Realtime reads
IDLE_TIMEOUT = 60.0  # Supabase closes a socket that sent nothing for a minute
MAX_FRAME_BYTES = 5 * 1024 * 1024  # Supabase's max_frame_size
MAX_MESSAGES_PER_SECOND = 100  # Supabase's default max_events_per_second
MAX_QUEUED_FRAMES = 20_000  # a client this far behind is closed rather than buffered without end


class Gateway:
    """Supabase Realtime's WebSocket endpoint for the change feed of one database.

    `await gateway.serve()` runs it until cancelled; `gateway.start()` runs it on a thread of its own (from a
    notebook or a test) and returns once it listens; `stop()` or the context manager ends it. Port 0 takes a
    free port (then `url` says which).
    """

    def __init__(self, database_url: str | None = None, *, host: str = "127.0.0.1", port: int = 4000,
                 jwt_secret: str = DEFAULT_JWT_SECRET, publication: str = PUBLICATION,
                 poll_interval: float = POLL_INTERVAL) -> None:
        self.database_url = database_url
        self.host, self.port = host, port
        self.jwt_secret = jwt_secret
        self.publication = publication
        self.poll_interval = poll_interval
        self.name = f"{socket.gethostname()}:{port}"  # whose counts websocket_channels' bookkeeping holds
        self.topics: dict[str, set[_Channel]] = defaultdict(set)  # for broadcasts
        self.by_subscriber: dict[Subscriber, _Channel] = {}
        self._feed: _FeedThread | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """What Supabase's clients take: they add `/websocket` themselves."""
        return f"ws://{self.host}:{self.port}/realtime/v1"

    # --- running --------------------------------------------------------------------------------------------

    async def serve(self, on_listening: Callable[[], None] | None = None) -> None:
        """Run until cancelled or `stop()`; the feed starts first, so a bad database fails before listening."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._feed = _FeedThread(self)
        self._feed.start()
        await asyncio.to_thread(self._feed.ready.wait)
        if self._feed.error is not None:
            raise self._feed.error
        try:
            async with await self._listen() as server:
                self.port = next(iter(server.sockets)).getsockname()[1]  # port 0: the one the system chose
                if on_listening is not None:
                    on_listening()
                await self._stopping.wait()
        finally:
            self._feed.stop()
            await asyncio.to_thread(self._feed.join)

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

    # --- connecting -----------------------------------------------------------------------------------------

    def _check_connect(self, connection: ServerConnection, request: Request) -> Response | None:
        """Before the upgrade, as Supabase: the path, then the connect token; a refusal is HTTP + JSON."""
        url = urlsplit(request.path)
        if url.path not in PATHS:
            return _json_response(HTTPStatus.NOT_FOUND, {"error": f"no Realtime endpoint at {url.path}; "
                                                                  f"use {' or '.join(PATHS)}"})
        query = parse_qs(url.query)
        token = (query.get("apikey") or [None])[0] or request.headers.get("x-api-key")
        if not token:
            return _json_response(HTTPStatus.UNAUTHORIZED, {"error": "API key is missing"})
        try:
            verify(token, self.jwt_secret)
        except TokenRefused as refused:
            return _json_response(HTTPStatus.UNAUTHORIZED, {"error": str(refused)})
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path).query)
        token = (query.get("apikey") or [None])[0] or ws.request.headers.get("x-api-key")
        connection = _Connection(self, ws, protocol.version((query.get("vsn") or [None])[0]), token)
        writer = asyncio.create_task(connection.write())
        try:
            while True:
                frame = await asyncio.wait_for(ws.recv(), IDLE_TIMEOUT)
                if not connection.count_message():
                    await connection.flooded()
                    break
                try:
                    message = protocol.decode(frame, connection.vsn)
                except BadFrame as bad:
                    log.info("realtime gateway: ignored a malformed frame (%s)", bad)
                    continue
                await self._on_message(connection, message)
        except (ConnectionClosed, TimeoutError):
            pass
        finally:
            for channel in list(connection.channels.values()):
                self._remove(channel)
            writer.cancel()
            await ws.close()

    async def _on_message(self, connection: _Connection, message: Message) -> None:
        if message.topic == "phoenix":
            if message.event == "heartbeat":
                connection.send(protocol.reply(message, "ok", {}))
            return
        if message.event == "phx_join":
            await self._join(connection, message)
            return
        channel = connection.channels.get(message.topic)
        if channel is None:
            status, response = ("ok", {}) if message.event == "phx_leave" else ("error", {"reason": "unmatched topic"})
            connection.send(protocol.reply(message, status, response))
        elif message.event == "phx_leave":
            connection.send(protocol.reply(message, "ok", {}))
            self._close(channel)
        elif message.event == "access_token":
            self._refresh(channel, message)
        elif message.event == "broadcast":
            self._broadcast(channel, message)

    # --- channels -------------------------------------------------------------------------------------------

    async def _join(self, connection: _Connection, message: Message) -> None:
        payload = message.payload if isinstance(message.payload, dict) else {}
        if not message.topic.startswith("realtime:"):  # the only channels the socket routes
            connection.send(protocol.reply(message, "error", {"reason": "unmatched topic"}))
            return
        if message.topic == "realtime:":
            connection.send(protocol.reply(message, "error", {"reason": "TopicNameRequired: You must provide a "
                                                                        "topic name"}))
            return
        if message.topic in connection.channels:  # joining again replaces the channel
            self._close(connection.channels[message.topic])
        token = payload.get("access_token") or payload.get("user_token")
        if not isinstance(token, str) or token.startswith("sb_"):
            token = connection.token
        try:
            claims = verify(token, self.jwt_secret)
        except TokenRefused as refused:
            connection.send(protocol.reply(message, "error", {"reason": refused.reason}))
            return
        config = payload.get("config") if isinstance(payload.get("config"), dict) else {}
        entries = config.get("postgres_changes") or []
        entries = entries if isinstance(entries, list) else []
        broadcast = config.get("broadcast") if isinstance(config.get("broadcast"), dict) else {}
        channel = _Channel(message.topic, message.join_ref, connection, entries, [_entry_id(e) for e in entries],
                           token, claims, bool(broadcast.get("self")), bool(broadcast.get("ack")))
        connection.channels[channel.topic] = channel
        self.topics[channel.topic].add(channel)
        connection.send(protocol.reply(message, "ok", {"postgres_changes": [
            {**entry, "id": id} if isinstance(entry, dict) else entry
            for entry, id in zip(entries, channel.ids, strict=True)]}))
        self._schedule_expiry(channel)
        tracked = channels.session_channel(channel.topic)
        if tracked is not None:
            try:
                channel.tracked = await self._feed_call(_count_in, self.name, *tracked)
            except Exception as error:  # the channel works; only its count is missing
                log.warning("realtime gateway: could not count a client in %s: %s", channel.topic, one_line(error))
        if entries:
            await self._subscribe(channel)

    async def _subscribe(self, channel: _Channel) -> None:
        """(Re)create the channel's subscriber in the feed; say so, or why not, as Supabase's system message."""
        old = channel.subscriber
        try:
            subscriber = await self._feed_call(_resubscribe, old, channel.claims, channel.entries)
        except Exception as refused:  # ChannelRefused, with Supabase's message; else what went wrong
            channel.subscriber = None
            if old is not None:
                self.by_subscriber.pop(old, None)
            self._system(channel, "postgres_changes", "error", one_line(refused))
            return
        if old is not None:
            self.by_subscriber.pop(old, None)
        if not channel.open:  # left while the feed subscribed it
            await self._feed_call(_unsubscribe, subscriber)
            return
        channel.subscriber = subscriber
        self.by_subscriber[subscriber] = channel
        if old is None:
            self._system(channel, "postgres_changes", "ok", "Subscribed to PostgreSQL")

    def _refresh(self, channel: _Channel, message: Message) -> None:
        """A new token for the channel: later deliveries use its claims; an invalid one ends the channel."""
        token = message.payload.get("access_token") if isinstance(message.payload, dict) else None
        if not isinstance(token, str) or token == channel.token or token.startswith("sb_"):
            return
        try:
            claims = verify(token, self.jwt_secret)
        except TokenRefused as refused:
            self._shut_down(channel, str(refused))
            return
        channel.token, channel.claims = token, claims
        self._schedule_expiry(channel)
        if channel.subscriber is not None:
            asyncio.get_running_loop().create_task(self._subscribe(channel))

    def _schedule_expiry(self, channel: _Channel) -> None:
        if channel.expiry is not None:
            channel.expiry.cancel()
        delay = max(0.0, float(channel.claims["exp"]) - time.time())
        channel.expiry = asyncio.get_running_loop().call_later(delay, self._expire, channel)

    def _expire(self, channel: _Channel) -> None:
        if channel.open:
            self._shut_down(channel, f"Token has expired {int(time.time() - float(channel.claims['exp']))} "
                                     "seconds ago")

    def _shut_down(self, channel: _Channel, reason: str) -> None:
        """Supabase's channel shutdown: a system error, then phx_close."""
        self._system(channel, "system", "error", reason)
        self._close(channel)

    def _close(self, channel: _Channel) -> None:
        """phx_close (its ref the join's), and the channel is gone."""
        channel.connection.send(Message(channel.topic, "phx_close", {}, channel.join_ref, channel.join_ref))
        self._remove(channel)

    def _remove(self, channel: _Channel) -> None:
        if not channel.open:
            return
        channel.open = False
        if channel.expiry is not None:
            channel.expiry.cancel()
        if channel.connection.channels.get(channel.topic) is channel:
            del channel.connection.channels[channel.topic]
        self.topics[channel.topic].discard(channel)
        if not self.topics[channel.topic]:
            del self.topics[channel.topic]
        if channel.subscriber is not None:
            self.by_subscriber.pop(channel.subscriber, None)
            self._feed_submit(_unsubscribe, channel.subscriber)
        tracked = channels.session_channel(channel.topic)
        if tracked is not None and channel.tracked:
            self._feed_submit(_count_out, self.name, *tracked)

    def _system(self, channel: _Channel, extension: str, status: str, text: str) -> None:
        channel.connection.send(Message(channel.topic, "system", {
            "extension": extension, "status": status, "message": text,
            "channel": channel.topic.removeprefix("realtime:")}, None, channel.join_ref))

    def _broadcast(self, channel: _Channel, message: Message) -> None:
        """To every channel joined to the topic (the sender's too with `self`); `ack` answers the sender."""
        for other in list(self.topics.get(channel.topic, ())):
            if other is not channel or channel.broadcast_self:
                other.connection.send(Message(channel.topic, "broadcast", message.payload))
        if channel.broadcast_ack:
            channel.connection.send(protocol.reply(message, "ok", {}))

    # --- the feed's side ------------------------------------------------------------------------------------

    def dispatch(self, delivered: dict[Subscriber, list[Delivered]]) -> None:
        """One poll's deliveries (on the event loop): a frame per channel per change, with its entries' ids."""
        for subscriber, deliveries in delivered.items():
            channel = self.by_subscriber.get(subscriber)
            if channel is None or not channel.open:
                continue
            for event, answered in deliveries:
                ids = [channel.ids[i] for i in answered]
                channel.connection.send(Message(channel.topic, "postgres_changes", {"ids": ids, "data": event}))

    async def _feed_call(self, function: Callable[..., Any], *args: Any) -> Any:
        assert self._feed is not None and self._loop is not None
        future = self._loop.create_future()
        self._feed.submit(function, args, future)
        return await future

    def _feed_submit(self, function: Callable[..., Any], *args: Any) -> None:
        assert self._feed is not None
        self._feed.submit(function, args, None)


@dataclass(eq=False)
class _Channel:
    topic: str
    join_ref: str | None
    connection: _Connection
    entries: list[Any]  # config.postgres_changes as sent
    ids: list[int]  # entry i's id
    token: str
    claims: dict[str, Any]
    broadcast_self: bool
    broadcast_ack: bool
    subscriber: Subscriber | None = None
    expiry: asyncio.TimerHandle | None = None
    tracked: bool = False  # counted in websocket_channels
    open: bool = True


@dataclass(eq=False)
class _Connection:
    gateway: Gateway
    ws: ServerConnection
    vsn: str
    token: str
    channels: dict[str, _Channel] = field(default_factory=dict)
    outgoing: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(MAX_QUEUED_FRAMES))
    behind: bool = False  # its queue overflowed: it is being closed
    _window: float = 0.0
    _messages: int = 0

    def send(self, message: Message) -> None:
        if self.behind:
            return
        try:
            self.outgoing.put_nowait(protocol.encode(message, self.vsn))
        except asyncio.QueueFull:
            log.warning("realtime gateway: closing a client %d frames behind", MAX_QUEUED_FRAMES)
            self.behind = True
            asyncio.get_running_loop().create_task(self.ws.close(1008, "too far behind"))

    async def write(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self.ws.send(await self.outgoing.get())

    def count_message(self) -> bool:
        """Count a received frame; False once this second's exceed Supabase's rate."""
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window, self._messages = now, 0
        self._messages += 1
        return self._messages <= MAX_MESSAGES_PER_SECOND

    async def flooded(self) -> None:
        """Supabase's answer to a flood: each channel shut down with its message; then the socket is closed."""
        for channel in list(self.channels.values()):
            self.gateway._shut_down(channel, "Too many messages per second")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._drain(), 5)
        await self.ws.close(1008, "Too many messages per second")

    async def _drain(self) -> None:
        while not self.outgoing.empty():
            await asyncio.sleep(0.01)


class _FeedThread(threading.Thread):
    """The gateway's `Realtime` and every database call, on one thread: commands between polls."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(name="kit-realtime-feed", daemon=True)
        self.gateway = gateway
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._commands: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any] | None]]
        self._commands = queue.SimpleQueue()
        self._stopped = threading.Event()

    def submit(self, function: Callable[..., Any], args: tuple[Any, ...], future: asyncio.Future[Any] | None
               ) -> None:
        self._commands.put((function, args, future))

    def stop(self) -> None:
        self._stopped.set()
        self._commands.put((_nothing, (), None))  # wake it

    def run(self) -> None:
        gateway = self.gateway
        try:
            realtime = Realtime(gateway.database_url, gateway.publication, poll_interval=gateway.poll_interval)
            channels.reconcile(realtime.conn, gateway.name)
        except BaseException as error:  # the gateway's start reports it
            self.error = error
            self.ready.set()
            return
        self.ready.set()
        with realtime:
            while not self._stopped.is_set():
                try:
                    self._run_commands(realtime, wait=0.0)
                    delivered = realtime.poll_delivered()
                except KitError as error:  # the feed's connection is gone: nothing more can be delivered
                    log.error("realtime gateway: %s", error)
                    gateway._loop.call_soon_threadsafe(gateway._stopping.set)
                    return
                if delivered:
                    gateway._loop.call_soon_threadsafe(gateway.dispatch, delivered)
                if not realtime.last_poll_changes:
                    self._run_commands(realtime, wait=gateway.poll_interval)

    def _run_commands(self, realtime: Realtime, wait: float) -> None:
        """Run the queued commands; with `wait`, wait up to that long for the first."""
        deadline = time.monotonic() + wait
        while not self._stopped.is_set():
            try:
                function, args, future = self._commands.get(timeout=max(0.0, deadline - time.monotonic())) \
                    if wait else self._commands.get_nowait()
            except queue.Empty:
                return
            wait = 0.0  # after the first, only what is queued already
            try:
                result, error = function(realtime, *args), None
            except Exception as failure:  # handed to the caller; never ends the feed
                result, error = None, failure
                if future is None:
                    log.warning("realtime gateway: %s", one_line(failure))
            if future is not None:
                self.gateway._loop.call_soon_threadsafe(_settle, future, result, error)


def _resubscribe(realtime: Realtime, old: Subscriber | None, claims: dict[str, Any], entries: list[Any]
                 ) -> Subscriber:
    """A channel's subscriber for these claims, in place of the old one (from the same poll on)."""
    subscriber = realtime.subscribe_channel(claims, entries)
    if old is not None and old in realtime.subscribers:
        realtime.unsubscribe(old)
    return subscriber


def _unsubscribe(realtime: Realtime, subscriber: Subscriber) -> None:
    if subscriber in realtime.subscribers:
        realtime.unsubscribe(subscriber)


def _count_in(realtime: Realtime, gateway: str, session: uuid.UUID, name: str) -> bool:
    return channels.joined(realtime.conn, gateway, session, name)


def _count_out(realtime: Realtime, gateway: str, session: uuid.UUID, name: str) -> None:
    channels.left(realtime.conn, gateway, session, name)


def _nothing(realtime: Realtime) -> None:
    pass


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _entry_id(entry: Any) -> int:
    """A `postgres_changes` entry's id: stable for the same entry, non-zero (both clients test truthiness)."""
    return zlib.crc32(json.dumps(entry, sort_keys=True, default=str).encode()) % 2_147_483_647 + 1


def _json_response(status: HTTPStatus, body: dict[str, Any]) -> Response:
    data = json.dumps(body, default=json_value).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return Response(status.value, status.phrase, headers, data)
