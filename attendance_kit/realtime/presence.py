"""Presence, as Supabase Realtime keeps it (Phoenix.Presence), without I/O: who is tracked on each topic.

A channel tracks at most one entry, under its presence key (its `presence.key`, else one the server made up),
with the fields it sent (`metas`, each with its `phx_ref`); several channels may share a key. Public and private
channels of the same topic name are separate, as in Supabase. Each change is a diff `{"joins": {...},
"leaves": {...}}` by key: a track joins, a changed track leaves the old meta and joins the new one (which names
the old as `phx_ref_prev`), an untrack (or the channel's end) leaves. The state is every key's metas.

`read_request` reads a channel's `presence` message as Supabase does, its limits and answers included: a channel
may send `CLIENT_MAX_CALLS` presence messages per `CLIENT_WINDOW` seconds, a tracked payload must be a map of at
most `MAX_PAYLOAD_BYTES` (its JSON).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

CLIENT_MAX_CALLS = 5  # Supabase's CLIENT_PRESENCE_MAX_CALLS
CLIENT_WINDOW = 30.0  # ... per CLIENT_PRESENCE_WINDOW_MS
MAX_PAYLOAD_BYTES = 3_000 * 1000  # Supabase's max_payload_size_in_kb

Diff = dict[str, dict[str, Any]]
Space = tuple[bool, str]  # (private, topic): public and private channels of a topic name never meet


class Presence:
    """Every topic's tracked entries: per space, owner (a channel) -> (key, meta)."""

    def __init__(self) -> None:
        self._tracked: dict[Space, dict[Hashable, tuple[str, dict[str, Any]]]] = {}
        self._refs = itertools.count(1)
        self._prefix = f"F{time.time_ns():x}-"  # refs unique across the gateway's restarts, as Phoenix's are

    def state(self, space: Space) -> dict[str, Any]:
        """`presence_state`: every key's metas, in the order they were tracked."""
        grouped: dict[str, Any] = {}
        for key, meta in self._tracked.get(space, {}).values():
            grouped.setdefault(key, {"metas": []})["metas"].append(meta)
        return grouped

    def track(self, space: Space, owner: Hashable, key: str, fields: dict[str, Any]) -> Diff | None:
        """Track (or update) the owner's entry; the diff, or None when nothing changed."""
        entries = self._tracked.setdefault(space, {})
        before = entries.get(owner)
        if before is not None and _fields(before[1]) == fields:
            return None
        meta = {**fields, "phx_ref": self._ref()}
        if before is not None:
            meta["phx_ref_prev"] = before[1]["phx_ref"]
        entries[owner] = (key, meta)
        return {"joins": {key: {"metas": [meta]}},
                "leaves": {} if before is None else {before[0]: {"metas": [before[1]]}}}

    def untrack(self, space: Space, owner: Hashable) -> Diff | None:
        """The owner's entry leaves; None when it had none."""
        entries = self._tracked.get(space, {})
        before = entries.pop(owner, None)
        if not entries:
            self._tracked.pop(space, None)
        if before is None:
            return None
        return {"joins": {}, "leaves": {before[0]: {"metas": [before[1]]}}}

    def _ref(self) -> str:
        return f"{self._prefix}{next(self._refs)}"


@dataclass(frozen=True)
class Request:
    """A presence message read: `track` (its `fields`) or `untrack`; else what to answer (`reply`: "ok" or "error",
    with `response`) or why the channel is shut down (`shut_down`)."""

    action: str | None = None
    fields: dict[str, Any] | None = None
    reply: str = "ok"
    response: dict[str, Any] | None = None
    shut_down: str | None = None


def read_request(payload: Any, calls: list[float], now: float) -> Request:
    """A `presence` message's payload (`{"event": "track", "payload": {...}}`), counted in `calls` (the channel's
    recent presence messages, kept here) against the rate."""
    payload = payload if isinstance(payload, dict) else {}
    event = payload.get("event")
    if not isinstance(event, str):  # no event: answered and ignored
        return Request()
    calls[:] = [at for at in calls if now - at < CLIENT_WINDOW]
    calls.append(now)
    if len(calls) > CLIENT_MAX_CALLS:
        return Request(shut_down="Client presence rate limit exceeded")
    if event.lower() == "untrack":
        return Request("untrack")
    if event.lower() != "track":
        return Request(reply="error", response={})
    fields = payload.get("payload")
    if not isinstance(fields, dict):
        return Request(reply="error", response={"reason": "Presence track payload must be a map"})
    if len(json.dumps(fields, default=str)) > MAX_PAYLOAD_BYTES:
        return Request(shut_down="Track message size exceeded")
    return Request("track", fields)


def _fields(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k not in ("phx_ref", "phx_ref_prev")}
