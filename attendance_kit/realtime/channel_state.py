"""The gateway's channels as a state machine without I/O: what each message, database result and timer does.

Every input is a method call and every effect is returned in an `Output`: the messages to send (to which client:
a broadcast goes to other sockets), the commands for the database worker (`Subscribe`, `Unsubscribe`, `CountIn`,
`CountOut`) and the channels' expiry timers to set or cancel. Time comes in as `now` (seconds since 1970), so the
whole protocol is tested with no network, no thread and no clock (tests/test_channel_state.py); gateway.py does the
sending, the waiting and the timing.

The inputs:
- `connect` / `disconnect`: a socket came (with its connect token, already checked) or went.
- `receive`: a decoded message: `heartbeat`, `phx_join`, `phx_leave`, `access_token` (a refreshed token),
  `broadcast`. A message for a topic the socket has not joined is answered `unmatched topic`.
- `subscription_done`: the database worker's answer to a `Subscribe`: done, or refused (with Supabase's reason)
  or failed (with what went wrong).
- `expire`: a channel's token has expired.
- `flooded`: the socket sent more than Supabase's rate.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..errors import one_line
from . import channels
from .admission import JoinRequest, Refusal, join_request, refreshed_token
from .protocol import Message, reply
from .tokens import TokenRefused, check_token

MAX_CHANNELS_PER_SOCKET = 100  # Supabase's max_channels_per_client


@dataclass(eq=False)
class Client:
    """One socket's side of the state: its connect token, its serializer, its joined channels by topic."""

    token: str
    vsn: str
    channels: dict[str, Channel] = field(default_factory=dict)


@dataclass(eq=False)
class Channel:
    """A joined topic: its `postgres_changes` entries and their ids, its token, claims and broadcast settings."""

    topic: str
    join_ref: str | None
    client: Client
    entries: list[Any]
    ids: list[int]
    token: str
    claims: dict[str, Any]
    broadcast_self: bool
    broadcast_ack: bool
    open: bool = True

    @property
    def expires_at(self) -> float:
        return float(self.claims["exp"])


# The database worker's commands, in the order they must run.

@dataclass(frozen=True)
class Subscribe:
    """The channel's subscriber for these claims, in place of any it had; `first` on the join."""

    channel: Channel
    claims: dict[str, Any]
    entries: list[Any]
    first: bool


@dataclass(frozen=True)
class Unsubscribe:
    channel: Channel


@dataclass(frozen=True)
class CountIn:
    """Count the channel's client in websocket_channels (the topic names a session's channel: channels.py)."""

    channel: Channel
    session: uuid.UUID
    name: str


@dataclass(frozen=True)
class CountOut:
    channel: Channel
    session: uuid.UUID
    name: str


Command = Subscribe | Unsubscribe | CountIn | CountOut


@dataclass
class Output:
    """What one input did, each list in order: messages to send (each to its client), commands for the database
    worker, and channels' expiry timers to set (at, in seconds since 1970) or to cancel (None)."""

    messages: list[tuple[Client, Message]] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    expiries: list[tuple[Channel, float | None]] = field(default_factory=list)


class ChannelState:
    """Every socket's channels, and which channels each topic has (for broadcasts)."""

    def __init__(self, jwt_secret: str, max_channels: int = MAX_CHANNELS_PER_SOCKET) -> None:
        self.jwt_secret = jwt_secret
        self.max_channels = max_channels
        self.topics: dict[str, set[Channel]] = defaultdict(set)

    def connect(self, token: str, vsn: str) -> Client:
        return Client(token, vsn)

    def disconnect(self, client: Client) -> Output:
        """The socket ended: its channels go, without a word (there is nobody to tell)."""
        out = Output()
        for channel in list(client.channels.values()):
            self._remove(channel, out)
        return out

    def receive(self, client: Client, message: Message, now: float) -> Output:
        out = Output()
        if message.topic == "phoenix":
            if message.event == "heartbeat":
                out.messages.append((client, reply(message, "ok", {})))
            return out
        if message.event == "phx_join":
            self._join(client, message, now, out)
            return out
        channel = client.channels.get(message.topic)
        if channel is None:
            status, response = ("ok", {}) if message.event == "phx_leave" else ("error", {"reason": "unmatched topic"})
            out.messages.append((client, reply(message, status, response)))
        elif message.event == "phx_leave":
            out.messages.append((client, reply(message, "ok", {})))
            self._close(channel, out)
        elif message.event == "access_token":
            self._refresh(channel, message, now, out)
        elif message.event == "broadcast":
            self._broadcast(channel, message, out)
        return out

    def subscription_done(self, command: Subscribe, error: Exception | None) -> Output:
        """Say so, or why not, as Supabase's system message (nothing to a channel closed meanwhile)."""
        out = Output()
        channel = command.channel
        if not channel.open:
            return out
        if error is not None:  # ChannelRefused, with Supabase's message; else what went wrong
            self._system(channel, "postgres_changes", "error", one_line(error), out)
        elif command.first:
            self._system(channel, "postgres_changes", "ok", "Subscribed to PostgreSQL", out)
        return out

    def expire(self, channel: Channel, now: float) -> Output:
        out = Output()
        if channel.open:
            self._shut_down(channel, f"Token has expired {int(now - channel.expires_at)} seconds ago", out)
        return out

    def flooded(self, client: Client) -> Output:
        """Supabase's answer to a flood: each channel shut down with its message (the socket is closed after)."""
        out = Output()
        for channel in list(client.channels.values()):
            self._shut_down(channel, "Too many messages per second", out)
        return out

    # --- the transitions ------------------------------------------------------------------------------------

    def _join(self, client: Client, message: Message, now: float, out: Output) -> None:
        request = join_request(message)
        if isinstance(request, Refusal):
            out.messages.append((client, reply(message, "error", {"reason": request.reason})))
            return
        if request.topic in client.channels:  # joining again replaces the channel
            self._close(client.channels[request.topic], out)
        if len(client.channels) >= self.max_channels:
            out.messages.append((client, reply(message, "error", {
                "reason": "ChannelRateLimitReached: Too many channels"})))
            return
        token = request.access_token or client.token
        try:
            claims = check_token(token, self.jwt_secret, now)
        except TokenRefused as refused:
            out.messages.append((client, reply(message, "error", {"reason": refused.reason})))
            return
        channel = self._open(client, request, token, claims)
        out.messages.append((client, reply(message, "ok", {"postgres_changes": request.reply_entries()})))
        out.expiries.append((channel, channel.expires_at))
        session_channel = channels.session_channel(channel.topic)
        if session_channel is not None:
            out.commands.append(CountIn(channel, *session_channel))
        if channel.entries:
            out.commands.append(Subscribe(channel, claims, channel.entries, first=True))

    def _open(self, client: Client, request: JoinRequest, token: str, claims: dict[str, Any]) -> Channel:
        channel = Channel(request.topic, request.join_ref, client, request.entries, request.ids, token, claims,
                          request.broadcast_self, request.broadcast_ack)
        client.channels[channel.topic] = channel
        self.topics[channel.topic].add(channel)
        return channel

    def _refresh(self, channel: Channel, message: Message, now: float, out: Output) -> None:
        """A new token for the channel: later deliveries use its claims; an invalid one ends the channel."""
        token = refreshed_token(message)
        if token is None or token == channel.token:
            return
        try:
            claims = check_token(token, self.jwt_secret, now)
        except TokenRefused as refused:
            self._shut_down(channel, str(refused), out)
            return
        channel.token, channel.claims = token, claims
        out.expiries.append((channel, channel.expires_at))
        if channel.entries:
            out.commands.append(Subscribe(channel, claims, channel.entries, first=False))

    def _broadcast(self, channel: Channel, message: Message, out: Output) -> None:
        """To every channel joined to the topic (the sender's too with `self`); `ack` answers the sender."""
        for other in self.topics.get(channel.topic, ()):
            if other is not channel or channel.broadcast_self:
                out.messages.append((other.client, Message(channel.topic, "broadcast", message.payload)))
        if channel.broadcast_ack:
            out.messages.append((channel.client, reply(message, "ok", {})))

    def _shut_down(self, channel: Channel, reason: str, out: Output) -> None:
        """Supabase's channel shutdown: a system error, then phx_close."""
        self._system(channel, "system", "error", reason, out)
        self._close(channel, out)

    def _close(self, channel: Channel, out: Output) -> None:
        """phx_close (its ref the join's), and the channel is gone."""
        out.messages.append((channel.client, Message(channel.topic, "phx_close", {}, channel.join_ref,
                                                     channel.join_ref)))
        self._remove(channel, out)

    def _remove(self, channel: Channel, out: Output) -> None:
        if not channel.open:
            return
        channel.open = False
        out.expiries.append((channel, None))
        if channel.client.channels.get(channel.topic) is channel:
            del channel.client.channels[channel.topic]
        self.topics[channel.topic].discard(channel)
        if not self.topics[channel.topic]:
            del self.topics[channel.topic]
        if channel.entries:
            out.commands.append(Unsubscribe(channel))
        session_channel = channels.session_channel(channel.topic)
        if session_channel is not None:
            out.commands.append(CountOut(channel, *session_channel))

    def _system(self, channel: Channel, extension: str, status: str, text: str, out: Output) -> None:
        out.messages.append((channel.client, Message(channel.topic, "system", {
            "extension": extension, "status": status, "message": text,
            "channel": channel.topic.removeprefix("realtime:")}, None, channel.join_ref)))
