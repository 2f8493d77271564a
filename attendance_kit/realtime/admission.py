"""Who gets in, as Supabase Realtime decides it before any channel exists: the connect check and the join request.

- `check_connect`: before the WebSocket upgrade, the path, then the connect token (`apikey` in the query, else an
  `x-api-key` header), read once; the answer is the connection's token and serializer, or a refusal that becomes
  HTTP 401 (404 for a path) with `{"error": ...}`, as from Supabase.
- `join_request`: a `phx_join` message as a typed `JoinRequest` (its `postgres_changes` entries and their ids,
  `private`, its broadcast and presence settings, whether its reply waits for its subscription, its token), or a
  `Refusal` with Supabase's reason for a topic it does not route. Flags take booleans or the strings "true" /
  "false" (Supabase's FlexibleBoolean); anything else counts as absent, as Supabase applies the defaults to a
  payload it cannot read. What depends on the socket's other channels or on the token's validity is the channel
  state's to decide (channel_state.py), as Supabase's channel process does after `join.ex` and `config.ex` have
  read the payload.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import protocol
from .protocol import Message
from .tokens import TokenRefused, check_token

PATHS = ("/realtime/v1/websocket", "/socket/websocket")
WAIT_MS = 15_000  # Supabase's default for postgres_changes_options.timeout
MAX_WAIT_MS = 20_000  # ... and its server's most (postgres_changes_wait_max_timeout)


@dataclass(frozen=True)
class Connect:
    """An accepted connection: its connect token and its serializer (`vsn`)."""

    token: str
    vsn: str


@dataclass(frozen=True)
class ConnectRefusal:
    status: HTTPStatus
    error: str


@dataclass(frozen=True)
class Refusal:
    """A join refused: `reason` as the reply's `response.reason` says it."""

    reason: str


@dataclass(frozen=True)
class JoinRequest:
    topic: str
    join_ref: str | None
    entries: list[Any]  # config.postgres_changes as sent
    ids: list[int]  # entry i's id
    access_token: str | None  # the payload's own token, if any; else the connect token applies
    private: bool
    broadcast_self: bool
    broadcast_ack: bool
    presence_enabled: bool
    presence_key: str | None  # None: the server makes one up (Supabase: a UUID v1)
    replication_ready: bool  # broadcast.replication_ready: say when broadcasts from the database flow
    wait_ms: int | None  # postgres_changes_options.wait: the reply waits for the subscription, this long at most

    def reply_entries(self) -> list[Any]:
        return reply_entries(self.entries, self.ids)


def reply_entries(entries: list[Any], ids: list[int]) -> list[Any]:
    """The join reply's `postgres_changes`: each entry with its id, as Supabase answers."""
    return [{**entry, "id": id} if isinstance(entry, dict) else entry for entry, id in zip(entries, ids, strict=True)]


def check_connect(target: str, headers: Mapping[str, str], jwt_secret: str) -> Connect | ConnectRefusal:
    """The request's path and query (`target`) and headers, checked as Supabase checks them."""
    url = urlsplit(target)
    if url.path not in PATHS:
        return ConnectRefusal(HTTPStatus.NOT_FOUND, f"no Realtime endpoint at {url.path}; use {' or '.join(PATHS)}")
    query = parse_qs(url.query)
    token = _first(query, "apikey") or headers.get("x-api-key")
    if not token:
        return ConnectRefusal(HTTPStatus.UNAUTHORIZED, "API key is missing")
    try:
        check_token(token, jwt_secret)
    except TokenRefused as refused:
        return ConnectRefusal(HTTPStatus.UNAUTHORIZED, str(refused))
    return Connect(token, protocol.version(_first(query, "vsn")))


def join_request(message: Message) -> JoinRequest | Refusal:
    """A `phx_join` read as Supabase reads it: anything of the wrong type counts as absent."""
    if not message.topic.startswith("realtime:"):  # the only channels the socket routes
        return Refusal("unmatched topic")
    if message.topic == "realtime:":
        return Refusal("TopicNameRequired: You must provide a topic name")
    payload = _object(message.payload)
    config = _object(payload.get("config"))
    broadcast, presence = _object(config.get("broadcast")), _object(config.get("presence"))
    entries = config.get("postgres_changes") or []
    entries = entries if isinstance(entries, list) else []
    return JoinRequest(message.topic, message.join_ref, entries, [entry_id(e) for e in entries],
                       own_token(payload.get("access_token") or payload.get("user_token")),
                       _flag(config.get("private")),
                       _flag(broadcast.get("self")), _flag(broadcast.get("ack")), _flag(presence.get("enabled")),
                       _presence_key(presence.get("key")), _flag(broadcast.get("replication_ready")),
                       _wait_ms(_object(config.get("postgres_changes_options")), entries))


def refreshed_token(message: Message) -> str | None:
    """An `access_token` message's token, if it carries one of the user's own."""
    return own_token(_object(message.payload).get("access_token"))


def own_token(value: Any) -> str | None:
    """A token that stands for a user: a string, not a project's `sb_` key (with one, the socket's token holds)."""
    return value if isinstance(value, str) and not value.startswith("sb_") else None


def entry_id(entry: Any) -> int:
    """A `postgres_changes` entry's id: stable for the same entry, non-zero (both clients test truthiness)."""
    return zlib.crc32(json.dumps(entry, sort_keys=True, default=str).encode()) % 2_147_483_647 + 1


def _flag(value: Any) -> bool:
    """A boolean as Supabase's FlexibleBoolean reads it: true, or the string "true"."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _wait_ms(options: dict[str, Any], entries: list[Any]) -> int | None:
    """How long the join's reply waits for its postgres_changes subscription (Supabase's
    `postgres_changes_options`: `wait`, and `timeout` in ms, 15 s by default and 20 s at most); None: it does not."""
    if not _flag(options.get("wait")) or not [entry for entry in entries if entry is not None]:
        return None
    timeout = options.get("timeout")
    if isinstance(timeout, str) and timeout.removeprefix("-").isdigit():  # Ecto casts "5000" as an integer
        timeout = int(timeout)
    return min(timeout if isinstance(timeout, int) and not isinstance(timeout, bool) else WAIT_MS, MAX_WAIT_MS)


def _presence_key(value: Any) -> str | None:
    """The key a channel's presence is tracked under; none (or "") leaves it to the server."""
    if value is None or value == "" or isinstance(value, (dict, list)):
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _first(query: dict[str, list[str]], name: str) -> str | None:
    return (query.get(name) or [None])[0]
