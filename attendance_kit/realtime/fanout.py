"""The gateway's fan-out: one poll's deliveries as the frames each socket is sent.

A channel receives one `postgres_changes` frame per change, carrying the ids of the channel's entries it answers.
One event serves every subscriber of its role alike (delivery.py), so its JSON is written once per poll and set
into each frame as it is (`protocol.change_frame`), not encoded again per socket. A channel closed since the poll
receives nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from . import protocol
from .channel_state import Channel, Client
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
