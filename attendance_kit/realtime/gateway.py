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
  re-subscribing with refreshed claims, websocket_channels) runs there as a command, in turn, between polls, so
  all sockets share one connection (plus delivery's lanes). The feed's side of a channel (its subscriber, whether
  it is counted in websocket_channels) is touched only there, so a command meets the state the commands before it
  left, whatever the sockets do meanwhile. Each poll's deliveries come back to the event loop in one batch, per
  channel, and go out as one frame per channel per change, with the ids of the entries it answers. A feed that
  cannot go on stops the gateway (its error is `serve`'s) rather than leave it hanging.
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
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..errors import KitError, one_line
from . import channels, protocol
from .client import Realtime
from .feed import POLL_INTERVAL
from .protocol import BadFrame, Message
from .subscriptions import Delivered, Subscriber
from .tokens import DEFAULT_JWT_SECRET, TokenRefused, verify
from .wire import json_value, wire_json

log = logging.getLogger(__package__)

PATHS = ("/realtime/v1/websocket", "/socket/websocket")
PUBLICATION = "supabase_realtime"  # the publication Supabase Realtime reads
IDLE_TIMEOUT = 60.0  # Supabase closes a socket that sent nothing for a minute
MAX_FRAME_BYTES = 5 * 1024 * 1024  # Supabase's max_frame_size
MAX_MESSAGES_PER_SECOND = 100  # Supabase's default max_events_per_second
MAX_QUEUED_FRAMES = 20_000  # a client this far behind is closed rather than buffered without end
MAX_QUEUED_BYTES = 16 * 1024 * 1024  # ... or this many bytes behind
MAX_CHANNELS_PER_SOCKET = 100  # Supabase's max_channels_per_client


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
        self.name = ""  # whose counts websocket_channels' bookkeeping holds: host:port, once listening
        self.topics: dict[str, set[_Channel]] = defaultdict(set)  # for broadcasts
        self._tasks: set[asyncio.Task[None]] = set()  # subscriptions under way (held, so none is collected)
        self._failure: BaseException | None = None
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
                self.name = f"{socket.gethostname()}:{self.port}"
                await self._feed_call(_reconcile, self.name)  # before any client: take back a crash's counts
                if on_listening is not None:
                    on_listening()
                await self._stopping.wait()
        finally:
            self._feed.stop()  # after the server closed: the sockets' last commands are queued before it
            await asyncio.to_thread(self._feed.join)
        if self._failure is not None:
            raise KitError(f"the gateway stopped: its change feed failed: {one_line(self._failure)}")

    def _fail(self, error: BaseException) -> None:
        """The feed cannot go on: stop serving, and say why."""
        self._failure = error
        if self._stopping is not None:
            self._stopping.set()

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
        if len(connection.channels) >= MAX_CHANNELS_PER_SOCKET:
            connection.send(protocol.reply(message, "error", {"reason": "ChannelRateLimitReached: Too many "
                                                                        "channels"}))
            return
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
        if channels.session_channel(channel.topic) is not None:
            self._feed_submit(_count_in, channel)
        if entries:
            self._subscribe(channel, first=True)

    def _subscribe(self, channel: _Channel, *, first: bool) -> None:
        """(Re)subscribe the channel in the feed with its current claims, in the background (the socket's other
        messages do not wait); say so, or why not, as Supabase's system message."""

        async def subscribe() -> None:
            try:
                await self._feed_call(_resubscribe, channel, channel.claims, channel.entries)
            except Exception as refused:  # ChannelRefused, with Supabase's message; else what went wrong
                if channel.open:
                    self._system(channel, "postgres_changes", "error", one_line(refused))
                return
            if first and channel.open:
                self._system(channel, "postgres_changes", "ok", "Subscribed to PostgreSQL")

        task = asyncio.get_running_loop().create_task(subscribe())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        if channel.entries:
            self._subscribe(channel, first=False)

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
        self._feed_submit(_unsubscribe, channel)
        if channels.session_channel(channel.topic) is not None:
            self._feed_submit(_count_out, channel)

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

    def dispatch(self, delivered: list[tuple[_Channel, list[Delivered]]]) -> None:
        """One poll's deliveries (on the event loop): a frame per channel per change, with its entries' ids."""
        written: dict[int, str] = {}  # each event's JSON, once: one event serves all its role's subscribers
        for channel, deliveries in delivered:
            if not channel.open:
                continue
            for event, answered in deliveries:
                data = written.get(id(event))
                if data is None:
                    data = written[id(event)] = wire_json(event)
                channel.connection.queue(protocol.change_frame(
                    channel.topic, [channel.ids[i] for i in answered], data, channel.connection.vsn))

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
    expiry: asyncio.TimerHandle | None = None
    open: bool = True  # set by the event loop; the feed's commands read it
    # The feed's side, touched only by its commands (on its thread):
    subscriber: Subscriber | None = None
    counted: bool = False  # in websocket_channels' active_connections


@dataclass(eq=False)
class _Connection:
    gateway: Gateway
    ws: ServerConnection
    vsn: str
    token: str
    channels: dict[str, _Channel] = field(default_factory=dict)
    outgoing: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(MAX_QUEUED_FRAMES))
    behind: bool = False  # its queue overflowed: it is being closed
    queued_bytes: int = 0
    _window: float = 0.0
    _messages: int = 0

    def send(self, message: Message) -> None:
        self.queue(protocol.encode(message, self.vsn))

    def queue(self, frame: str) -> None:
        """A frame to write, in turn; a client too far behind is closed instead."""
        if self.behind:
            return
        self.queued_bytes += len(frame)
        try:
            if self.queued_bytes > MAX_QUEUED_BYTES:
                raise asyncio.QueueFull
            self.outgoing.put_nowait(frame)
        except asyncio.QueueFull:
            log.warning("realtime gateway: closing a client too far behind (%d frames, %d bytes)",
                        self.outgoing.qsize(), self.queued_bytes)
            self.behind = True
            asyncio.get_running_loop().create_task(self.ws.close(1008, "too far behind"))

    async def write(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                frame = await self.outgoing.get()
                self.queued_bytes -= len(frame)
                await self.ws.send(frame)

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


_STOP = object()  # the feed's last command


class _FeedThread(threading.Thread):
    """The gateway's `Realtime` and every database call, on one thread: commands between polls."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(name="kit-realtime-feed", daemon=True)
        self.gateway = gateway
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.realtime: Realtime | None = None
        self.channel_of: dict[Subscriber, _Channel] = {}
        self._commands: queue.SimpleQueue[tuple[Any, tuple[Any, ...], asyncio.Future[Any] | None]]
        self._commands = queue.SimpleQueue()

    def submit(self, function: Callable[..., Any], args: tuple[Any, ...], future: asyncio.Future[Any] | None
               ) -> None:
        self._commands.put((function, args, future))

    def stop(self) -> None:
        """End after the commands queued so far (the sockets' last count-outs among them)."""
        self._commands.put((_STOP, (), None))

    def run(self) -> None:
        gateway = self.gateway
        try:
            self.realtime = Realtime(gateway.database_url, gateway.publication, poll_interval=gateway.poll_interval)
        except BaseException as error:  # the gateway's start reports it
            self.error = error
            self.ready.set()
            return
        self.ready.set()
        with self.realtime:
            try:
                while self._run_commands(wait=0.0):
                    delivered = self.realtime.poll_delivered()
                    batch = [(self.channel_of[s], d) for s, d in delivered.items() if s in self.channel_of]
                    if batch:
                        gateway._loop.call_soon_threadsafe(gateway.dispatch, batch)
                    if not self.realtime.last_poll_changes and not self._run_commands(wait=gateway.poll_interval):
                        break
            except Exception as error:  # the feed cannot go on: the gateway stops rather than hang
                log.error("realtime gateway: the change feed failed: %s", one_line(error))
                _call_soon(gateway._loop, gateway._fail, error)
            finally:
                self._fail_queued()

    def _run_commands(self, wait: float) -> bool:
        """Run the queued commands, waiting up to `wait` for the first; False once told to stop."""
        deadline = time.monotonic() + wait
        while True:
            try:
                timeout = deadline - time.monotonic()
                function, args, future = self._commands.get(timeout=timeout) if timeout > 0 else \
                    self._commands.get_nowait()
            except queue.Empty:
                return True
            deadline = 0.0  # after the first, only what is queued already
            if function is _STOP:
                return False
            try:
                result, error = function(self, *args), None
            except Exception as failure:  # handed to the caller; never ends the feed
                result, error = None, failure
                if future is None:
                    log.warning("realtime gateway: %s", one_line(failure))
            if future is not None:
                _call_soon(self.gateway._loop, _settle, future, result, error)

    def _fail_queued(self) -> None:
        """Whatever is still queued will not run: its callers hear so."""
        while True:
            try:
                function, _args, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if future is not None and function is not _STOP:
                _call_soon(self.gateway._loop, _settle, future, None, KitError("the gateway is stopping"))

    def forget(self, channel: _Channel) -> None:
        if channel.subscriber is not None:
            self.realtime.unsubscribe(channel.subscriber)
            del self.channel_of[channel.subscriber]
            channel.subscriber = None


# The feed's commands: each runs on its thread, in turn, with the state the commands before it left.

def _resubscribe(feed: _FeedThread, channel: _Channel, claims: dict[str, Any], entries: list[Any]) -> None:
    """The channel's subscriber for these claims, in place of its old one (from the next poll on); on a refusal,
    none."""
    feed.forget(channel)
    if channel.open:
        channel.subscriber = feed.realtime.subscribe_channel(claims, entries)
        feed.channel_of[channel.subscriber] = channel


def _unsubscribe(feed: _FeedThread, channel: _Channel) -> None:
    feed.forget(channel)


def _count_in(feed: _FeedThread, channel: _Channel) -> None:
    if channel.open and not channel.counted:
        session, name = channels.session_channel(channel.topic)
        channel.counted = channels.joined(feed.realtime.conn, feed.gateway.name, session, name)


def _count_out(feed: _FeedThread, channel: _Channel) -> None:
    if channel.counted:
        session, name = channels.session_channel(channel.topic)
        channels.left(feed.realtime.conn, feed.gateway.name, session, name)
        channel.counted = False


def _reconcile(feed: _FeedThread, gateway: str) -> None:
    try:
        channels.reconcile(feed.realtime.conn, gateway)
    except psycopg.errors.UndefinedTable:
        raise KitError("this database lacks the gateway's bookkeeping (sql/007_realtime_gateway.sql): apply the "
                       "migrations ({command})", command="migrate") from None


def _call_soon(loop: asyncio.AbstractEventLoop | None, callback: Callable[..., Any], *args: Any) -> None:
    """On the event loop, unless it has ended already (then nobody is waiting)."""
    if loop is not None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback, *args)


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
