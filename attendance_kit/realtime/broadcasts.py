"""Broadcast from Database: the rows committed to `realtime.messages`, as the change feed reads them.

`realtime.send` (and `realtime.broadcast_changes`, from a trigger) inserts a row; the change feed reads the
publication `supabase_realtime_messages_publication` on the same slot as the tables', and these rows go apart:
they are not `postgres_changes`, but messages for the channels joined to `realtime:<topic>` (the gateway's).
As Supabase Realtime, only INSERTs count, on `realtime.messages` or one of its partitions (`messages_*`), and a
row missing its event, topic, `private` or payload is skipped (Supabase logs `UnableToBroadcastChanges`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .decoding import Change, Relation

log = logging.getLogger(__package__)

PUBLICATION = "supabase_realtime_messages_publication"  # the name Supabase Realtime gives it


@dataclass(frozen=True)
class Broadcast:
    """A message for a topic's channels: public ones for `private` false, private ones for true."""

    id: str
    topic: str  # without `realtime:`
    event: str
    private: bool
    payload: Any  # the row's jsonb, as stored (with the `id` that `realtime.send` adds)


def is_message(relation: Relation) -> bool:
    """A relation of `realtime.messages`: the table (published via its root) or one of its partitions."""
    return relation.schema == "realtime" and relation.name.startswith("messages")


def broadcast_of(change: Change, new: dict[str, Any]) -> Broadcast | None:
    """The broadcast a change of realtime.messages (`new`: its new row's values) carries, if any."""
    if change.type != "INSERT":
        return None
    fields = [new.get(name) for name in ("id", "topic", "event", "private", "payload")]
    if any(value is None for value in fields):
        log.info("realtime: a realtime.messages row without id, topic, event, private or payload is not broadcast")
        return None
    id, topic, event, private, payload = fields
    return Broadcast(str(id), topic, event, bool(private), payload)
