"""`Realtime`, the realtime client, and what the command line calls (`listen`, `render_event`).

`Realtime` ties the stages together: its `ChangeFeed` (feed.py) reads and decodes the slot, `subscribe` adds a
subscriber (subscriptions.py), and each `poll` hands the changes to its `Delivery` (delivery.py), which has them
authorised (authorisation.py) and returns each subscriber's events.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..connection import connect
from .broadcasts import Broadcast, broadcast_of, is_message
from .delivery import SUBSCRIBERS_PER_LANE, Delivery
from .feed import MAX_MESSAGES_PER_POLL, POLL_INTERVAL, PUBLICATION, ChangeFeed
from .subscriptions import Delivered, Event, Subscriber, channel_subscriber, new_subscriber
from .wire import event_json


class Realtime:
    """A change feed with subscribers: each poll gives each subscriber the events RLS lets it see, in order.

    Use it as a context manager (or call `close`): the slot is dropped with the connection.
    """

    def __init__(self, database_url: str | None = None, publication: str = PUBLICATION, *,
                 broadcasts: str | None = None, poll_interval: float = POLL_INTERVAL,
                 max_messages: int = MAX_MESSAGES_PER_POLL, lanes: int = 2,
                 subscribers_per_lane: int = SUBSCRIBERS_PER_LANE) -> None:
        """`broadcasts`: realtime.messages' publication, read on the same slot (`poll_routed`). `lanes`:
        connections authorising in parallel, one per `subscribers_per_lane` subscribers (`conn` is the first; the
        others open when needed).

        The slot's connection runs nothing but the slot's reads: PostgreSQL drops a connection's temporary slots
        at any error on it, so whatever may fail (a subscription's checks, a policy that raises as a subscriber, the
        gateway's bookkeeping) runs on `conn`, a connection of its own."""
        self.feed = ChangeFeed(database_url, publication, broadcasts=broadcasts, max_messages=max_messages)
        try:
            self.conn = connect(database_url)
        except BaseException:
            self.feed.close()
            raise
        self.poll_interval = poll_interval
        self.subscribers: list[Subscriber] = []
        self.last_poll_changes = 0
        self._delivery = Delivery(self.feed, self.conn, database_url, lanes=lanes,
                                  subscribers_per_lane=subscribers_per_lane)

    def subscribe(self, who: str | uuid.UUID | None = None, *, claims: dict[str, Any] | None = None,
                  tables: Sequence[str] | None = None, event: str = "*", filter: str | None = None,
                  schema: str = "public") -> Subscriber:
        """Subscribe a user (UUID, email, 'anon' or 'service_role'), or explicit JWT `claims`.

        `tables`: published tables (default: all of them); `event`: INSERT, UPDATE, DELETE or *;
        `filter`: Supabase's column filter, e.g. 'session_id=eq.<uuid>' (needs exactly one table).
        """
        subscriber = new_subscriber(self.conn, self.feed.publication, who, claims=claims, tables=tables,
                                    event=event, filter=filter, schema=schema)
        self.subscribers.append(subscriber)
        return subscriber

    def subscribe_channel(self, claims: dict[str, Any], entries: Sequence[Any]) -> Subscriber:
        """Subscribe a Supabase channel: JWT `claims` and its `postgres_changes` entries (dicts of event, schema,
        table, filter), subscription i being entry i; refused with Supabase's message (`ChannelRefused`)."""
        subscriber = channel_subscriber(self.conn, self.feed.publication, claims, entries)
        self.subscribers.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """From the next poll on, `subscriber` receives nothing."""
        self.subscribers.remove(subscriber)

    def poll(self) -> dict[Subscriber, list[Event]]:
        """Read what was committed since the last poll; return each subscriber's events, in commit order."""
        return {subscriber: [d.event for d in delivered] for subscriber, delivered in self.poll_delivered().items()}

    def poll_delivered(self) -> dict[Subscriber, list[Delivered]]:
        """As `poll`, each event with the indexes of the subscriber's subscriptions it answers."""
        return self.poll_routed()[0]

    def poll_routed(self) -> tuple[dict[Subscriber, list[Delivered]], list[Broadcast]]:
        """As `poll_delivered`, and apart, in commit order, the broadcasts committed to realtime.messages (rows
        of its publication are messages for the gateway's channels, not postgres_changes)."""
        changes = self.feed.poll()
        self.last_poll_changes = len(changes)
        messages = [change for change in changes if is_message(change.relation)]
        if messages:
            changes = [change for change in changes if not is_message(change.relation)]
        broadcasts = [b for b in (broadcast_of(m, self.feed.values(m)[0]) for m in messages) if b is not None]
        if not changes or not self.subscribers:
            return {}, broadcasts
        return self._delivery.deliver(changes, self.subscribers), broadcasts

    def stream(self, seconds: float | None = None) -> Iterator[tuple[Subscriber, Event]]:
        """Poll as `next_poll_in` says, for `seconds` or until closed.

        The last poll starts after the deadline, so every change committed before it is delivered.
        """
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            started = time.monotonic()
            for subscriber, events in self.poll().items():
                for event in events:
                    yield subscriber, event
            if deadline is not None and started >= deadline:
                return
            pause = self.next_poll_in(started)
            if deadline is not None:
                pause = min(pause, deadline - time.monotonic())
            if pause > 0:
                time.sleep(pause)

    def next_poll_in(self, poll_started: float) -> float:
        """The cadence of `stream` and of the gateway's database worker: how long to wait after the poll that
        started at `poll_started` (`time.monotonic()`): nothing after a poll that found changes (under load a poll
        takes longer than the interval, and waiting would only add latency), else the rest of `poll_interval`."""
        if self.last_poll_changes:
            return 0.0
        return max(0.0, self.poll_interval - (time.monotonic() - poll_started))

    def close(self) -> None:
        self._delivery.close()
        self.conn.close()
        self.feed.close()

    def __enter__(self) -> Realtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def listen(who: str | uuid.UUID, *, database_url: str | None = None, tables: Sequence[str] = (),
           event: str = "*", filter: str | None = None, seconds: float | None = None,
           publication: str = PUBLICATION, poll_interval: float = POLL_INTERVAL,
           on_listening: Callable[[], None] | None = None) -> Iterator[Event]:
    """The events `who` may see, as they are committed, for `seconds` (or until the caller stops iterating).

    The slot is created before the first event and dropped when the generator ends, however it ends;
    `on_listening` is called once it exists and the subscription is in place.
    """
    with Realtime(database_url, publication, poll_interval=poll_interval) as realtime:
        realtime.subscribe(who, tables=list(tables) or None, event=event, filter=filter)
        if on_listening is not None:
            on_listening()
        for _subscriber, item in realtime.stream(seconds):
            yield item


def render_event(event: Event, output_format: str = "jsonl") -> str:
    """One line: the event as JSON, as Supabase Realtime sends its `data` ('jsonl'), or a short human line
    ('table')."""
    if output_format == "jsonl":
        return event_json(event)
    row = event.get("record") or event.get("old_record") or {}
    shown = " ".join(f"{k}={v if isinstance(v, str) else event_json(v).strip(chr(34))}" for k, v in row.items())
    moment = (event["commit_timestamp"] or "")[11:23]  # HH:MM:SS.mmm (none with an error)
    errors = " ".join(event["errors"] or [])
    return f"{moment:12}  {event['type']:<6}  {event['schema']}.{event['table']}  {shown}  {errors}".rstrip()
