"""The gateway's fan-out: one poll's deliveries and broadcasts from the database as the frames each socket is sent.

A channel receives one `postgres_changes` frame per change, carrying the ids of the channel's entries it answers.
One event serves every subscriber of its role alike (delivery.py), so its JSON is written once per poll and set
into each frame as it is (`protocol.change_frame`), not encoded again per socket. A broadcast from the database is
Supabase's broadcast frame, `{"event", "payload", "type": "broadcast", "meta": {"id"}}`, its JSON also written
once. A channel closed since the poll receives nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from . import protocol
from .broadcasts import Broadcast
from .channel_model import Channel, Client
from .subscriptions import Delivered
from .wire import wire_json


def change_frames(delivered: list[tuple[Channel, list[Delivered]]]) -> Iterator[tuple[Client, str]]:
    """Each frame, with the client to send it to, in the poll's order."""
    written: dict[int, str] = {}  # each event's JSON by its id(): the events outlive this loop, so ids stay unique
    for channel, deliveries in delivered:
        if not channel.open:
            continue
        for event, answered in deliveries:
            data = written.get(id(event))
            if data is None:
                data = written[id(event)] = wire_json(event)
            yield channel.client, protocol.change_frame(channel.topic, [channel.ids[i] for i in answered], data,
                                                        channel.client.vsn)


def broadcast_frames(reached: Iterator[tuple[Channel, Broadcast]]) -> Iterator[tuple[Client, str]]:
    """Each channel's frame of each broadcast it is reached by, in that order."""
    written: dict[str, str] = {}  # each broadcast's payload JSON by its id
    for channel, broadcast in reached:
        payload = written.get(broadcast.id)
        if payload is None:
            payload = written[broadcast.id] = wire_json({"event": broadcast.event, "payload": broadcast.payload,
                                                         "type": "broadcast", "meta": {"id": broadcast.id}})
        yield channel.client, protocol.push_frame(channel.topic, "broadcast", payload, channel.client.vsn)
