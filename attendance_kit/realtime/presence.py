"""Presence, as Supabase Realtime keeps it (Phoenix.Presence), without I/O: who is tracked on each topic.

A channel tracks at most one entry, under its presence key (its `presence.key`, else one the server made up),
with the fields it sent (`metas`, each with its `phx_ref`); several channels may share a key. Public and private
channels of the same topic name are separate, as in Supabase. Each change is a diff `{"joins": {...},
"leaves": {...}}` by key: a track joins, a changed track leaves the old meta and joins the new one (which names
the old as `phx_ref_prev`), an untrack (or the channel's end) leaves. The state is every key's metas.

The limits are Supabase's: a channel may send `CLIENT_MAX_CALLS` presence messages per `CLIENT_WINDOW` seconds,
and a tracked payload may be `MAX_PAYLOAD_BYTES` long (its JSON).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Hashable
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


def within_client_rate(calls: list[float], now: float) -> bool:
    """Count a presence message (`calls`: the channel's recent ones, kept here); False once over the limit."""
    calls[:] = [at for at in calls if now - at < CLIENT_WINDOW]
    calls.append(now)
    return len(calls) <= CLIENT_MAX_CALLS


def too_large(fields: dict[str, Any]) -> bool:
    return len(json.dumps(fields, default=str)) > MAX_PAYLOAD_BYTES


def _fields(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k not in ("phx_ref", "phx_ref_prev")}
