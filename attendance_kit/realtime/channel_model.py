"""The channel state's data (channel_state.py): each socket's `Client`, each joined topic's `Channel`, the commands
for the database worker, and the `Output` of one input.

A private channel (Realtime Authorization) keeps what its policies allowed, per extension, as far as asked: read at
the join and at each refreshed token, write at the first broadcast or track (Supabase's cache, never per message).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from . import presence
from .protocol import Message


@dataclass(eq=False)
class Client:
    """One socket's side of the state: its connect token, its serializer, its joined channels by topic."""

    token: str
    vsn: str
    channels: dict[str, Channel] = field(default_factory=dict)
    joining: dict[str, Channel] = field(default_factory=dict)  # private joins waiting for their policies


@dataclass(eq=False)
class Channel:
    """A joined topic: its `postgres_changes` entries and their ids, its token, claims, broadcast and presence
    settings; a private one, what its policies allow (by extension, as far as asked: Supabase's cache)."""

    topic: str
    join_ref: str | None
    client: Client
    entries: list[Any]
    ids: list[int]
    token: str
    claims: dict[str, Any]
    broadcast_self: bool
    broadcast_ack: bool
    private: bool = False
    presence_enabled: bool = False
    presence_key: str = ""
    replication_ready: bool = False
    wait_ms: int | None = None  # postgres_changes_options.wait: the join's reply waits for its subscription ...
    wait_until: float | None = None  # ... until then at most
    read: dict[str, bool] = field(default_factory=dict)
    write: dict[str, bool] = field(default_factory=dict)
    waiting: list[Message] = field(default_factory=list)  # broadcasts and tracks waiting for the write check
    presence_calls: list[float] = field(default_factory=list)
    join: Message | None = None  # its phx_join, while its policies are asked
    open: bool = True

    @property
    def expires_at(self) -> float:
        return float(self.claims["exp"])

    @property
    def sub_topic(self) -> str:
        return self.topic.removeprefix("realtime:")

    @property
    def space(self) -> presence.Space:
        return self.private, self.topic

    @property
    def reads(self) -> tuple[str, ...]:
        """The reads a private channel's policies are asked at its join and each new token: presence's only
        when presence is on (Supabase's rule: a presence-only user who joins without it is refused)."""
        return ("broadcast", "presence") if self.presence_enabled else ("broadcast",)

    def may_read(self, extension: str) -> bool:
        return not self.private or self.read.get(extension) is True


# The database worker's commands, in the order they must run.

UNAVAILABLE = "Realtime was unable to connect to the project database"  # Supabase's words


class DatabaseUnavailable(Exception):
    """A command's outcome while the worker has no database: it is not run (the worker subscribes and counts every
    open channel again once the database is back)."""

    def __init__(self) -> None:
        super().__init__(UNAVAILABLE)


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


@dataclass(frozen=True)
class CheckPolicies:
    """Ask the RLS policies on realtime.messages what the channel's user may `read` and `write` (extensions) on
    its topic: at the join, at a refreshed token, at the first broadcast or track."""

    channel: Channel
    claims: dict[str, Any]
    purpose: Literal["join", "refresh", "write"]
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()


Command = Subscribe | Unsubscribe | CountIn | CountOut | CheckPolicies


@dataclass
class Output:
    """What one input did, each list in order: messages to send (each to its client), commands for the database
    worker, and channels' expiry timers to set (at, in seconds since 1970) or to cancel (None)."""

    messages: list[tuple[Client, Message]] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    expiries: list[tuple[Channel, float | None]] = field(default_factory=list)
