"""Which open channels each topic has, and which of them a message on the topic reaches.

A channel hears only channels of its own privacy (a public `room` and a private `room` are two topics to
Supabase), and a private one only what its policies let it read (channel_model.py's `may_read`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from .broadcasts import Broadcast
from .channel_model import Channel


class Topics:
    """The open channels by topic (`realtime:<name>`)."""

    def __init__(self) -> None:
        self.channels: dict[str, set[Channel]] = defaultdict(set)

    def add(self, channel: Channel) -> None:
        self.channels[channel.topic].add(channel)

    def discard(self, channel: Channel) -> None:
        self.channels[channel.topic].discard(channel)
        if not self.channels[channel.topic]:
            del self.channels[channel.topic]

    def every_channel(self) -> list[Channel]:
        return [channel for of_topic in self.channels.values() for channel in of_topic]

    def broadcast_from(self, sender: Channel) -> Iterator[Channel]:
        """A client's broadcast: the topic's other channels (the sender's too with `self`) that may read it."""
        for other in self._alike(sender):
            if (other is not sender or sender.broadcast_self) and other.may_read("broadcast"):
                yield other

    def presence_diff_from(self, tracked: Channel) -> Iterator[Channel]:
        """A presence diff: the topic's channels that use presence and may read it."""
        for other in self._alike(tracked):
            if other.presence_enabled and other.may_read("presence"):
                yield other

    def database_broadcast(self, broadcast: Broadcast) -> Iterator[Channel]:
        """Broadcast from Database: the message's topic's channels of its privacy that may read broadcasts."""
        for channel in self.channels.get(f"realtime:{broadcast.topic}", ()):
            if channel.private == broadcast.private and channel.may_read("broadcast"):
                yield channel

    def _alike(self, channel: Channel) -> Iterator[Channel]:
        return (other for other in self.channels.get(channel.topic, ()) if other.private == channel.private)
