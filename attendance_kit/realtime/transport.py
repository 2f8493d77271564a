"""One socket's I/O for the gateway: what it receives, at what rate, and its outgoing frames, written in turn.

Outgoing frames wait in the socket's own queue, written by its own task, so a slow client never holds up the
others; a client so far behind that its queue holds `MAX_QUEUED_FRAMES` frames or `MAX_QUEUED_BYTES` bytes is
closed (1008) rather than buffered without end. A socket silent for `IDLE_TIMEOUT` (Supabase's minute) ends; one
that sends more than `MAX_MESSAGES_PER_SECOND` is flooding (what that does to its channels is the channel state's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from . import protocol
from .protocol import Message

log = logging.getLogger(__package__)

IDLE_TIMEOUT = 60.0  # Supabase closes a socket that sent nothing for a minute
MAX_MESSAGES_PER_SECOND = 100  # Supabase's default max_events_per_second
MAX_QUEUED_FRAMES = 20_000  # a client this far behind is closed rather than buffered without end
MAX_QUEUED_BYTES = 16 * 1024 * 1024  # ... or this many bytes behind
FLUSH_TIMEOUT = 5.0  # how long a closing socket's last frames may take


class Transport:
    """A socket, its serializer (`vsn`) and its outgoing queue; `start` its writer, `close` it at the end."""

    def __init__(self, ws: ServerConnection, vsn: str) -> None:
        self.ws = ws
        self.vsn = vsn
        self._outgoing: asyncio.Queue[str] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self._queued_bytes = 0
        self._behind = False  # its queue overflowed: it is being closed
        self._writer: asyncio.Task[None] | None = None
        self._window = 0.0  # when this second's count began
        self._messages = 0

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write())

    async def receive(self) -> str | bytes | None:
        """The client's next frame; None once it closed, or was silent for `IDLE_TIMEOUT`."""
        try:
            return await asyncio.wait_for(self.ws.recv(), IDLE_TIMEOUT)
        except (ConnectionClosed, TimeoutError):
            return None

    def within_rate(self) -> bool:
        """Count a received frame; False once this second's exceed Supabase's rate."""
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window, self._messages = now, 0
        self._messages += 1
        return self._messages <= MAX_MESSAGES_PER_SECOND

    def send(self, message: Message) -> None:
        self.queue(protocol.encode(message, self.vsn))

    def queue(self, frame: str) -> None:
        """A frame to write, in turn; a client too far behind is closed instead."""
        if self._behind:
            return
        self._queued_bytes += len(frame)
        try:
            if self._queued_bytes > MAX_QUEUED_BYTES:
                raise asyncio.QueueFull
            self._outgoing.put_nowait(frame)
        except asyncio.QueueFull:
            log.warning("realtime gateway: closing a client too far behind (%d frames, %d bytes)",
                        self._outgoing.qsize(), self._queued_bytes)
            self._behind = True
            asyncio.get_running_loop().create_task(self.ws.close(1008, "too far behind"))

    async def close(self, code: int = 1000, reason: str = "", *, flush: bool = False) -> None:
        """Close the socket; with `flush`, once the frames queued so far are written (or `FLUSH_TIMEOUT` passed)."""
        if flush:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flushed(), FLUSH_TIMEOUT)
        if self._writer is not None:
            self._writer.cancel()  # a frame it was writing is in the socket's buffer already
        await self.ws.close(code, reason)

    async def _write(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                frame = await self._outgoing.get()
                self._queued_bytes -= len(frame)
                await self.ws.send(frame)

    async def _flushed(self) -> None:
        while not self._outgoing.empty():
            await asyncio.sleep(0.01)
