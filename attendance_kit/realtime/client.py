"""`Realtime`, the realtime client, and what the command line calls (`listen`, `render_event`).

`Realtime` ties the stages together: its `ChangeFeed` (feed.py) reads and decodes the slot, `subscribe` adds a
subscriber (subscriptions.py), and each `poll` hands the changes to its `Delivery` (delivery.py), which has them
authorised (authorisation.py) and returns each subscriber's events.
"""

from __future__ import annotations

import contextlib
import select
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg

from .. import connection
from ..connection import connect
from ..errors import KitError, one_line
from .broadcasts import Broadcast, broadcast_of, is_message
from .decoding import Change
from .delivery import SUBSCRIBERS_PER_LANE, Delivery
from .feed import MAX_MESSAGES_PER_POLL, POLL_INTERVAL, PUBLICATION, ChangeFeed, FeedLost, lost
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
        self.database_url, self.publication, self.broadcasts = database_url, publication, broadcasts
        self.poll_interval, self.max_messages = poll_interval, max_messages
        self.lanes, self.subscribers_per_lane = lanes, subscribers_per_lane
        self.subscribers: list[Subscriber] = []
        self.last_poll_changes = 0
        # How far behind the database the last poll was: from its oldest change's commit to its events' return.
        self.last_poll_behind = 0.0
        self._open(connection.database_url(database_url))

    def _open(self, url: str) -> None:
        self._url = url
        self.feed = ChangeFeed(url, self.publication, broadcasts=self.broadcasts, max_messages=self.max_messages)
        try:
            self._open_delivery()
        except BaseException:
            self.feed.close()
            raise

    def _open_delivery(self) -> None:
        self.conn = connect(self._url)
        self._delivery = Delivery(self.feed, self.conn, self._url, lanes=self.lanes,
                                  subscribers_per_lane=self.subscribers_per_lane)

    def reopen_lost_connections(self) -> None:
        """Connections other than the slot's that the server ended while idle (an administrator, a pooler) are
        opened again, losing nothing: called before each poll, and by the gateway before each command. A server
        that cannot be reached is `FeedLost`."""
        if not any(map(_ended, [self.conn, *self._delivery.connections()])):
            return
        with contextlib.suppress(psycopg.Error):
            self._delivery.close()
        self.conn.close()
        try:
            self._open_delivery()
        except KitError as error:
            raise lost("a connection of the change feed", error) from None

    def reconnect(self) -> None:
        """After `FeedLost`: a new slot on new connections, the same subscribers (one attempt: a database still
        away raises KitError, so try again later, e.g. after `reconnect_delays`). What was committed between the
        loss and now is not delivered, as with Supabase Realtime, whose slot is temporary too.

        The kit's own cluster (no URL given) is not started here: it is reconnected to once it runs again (its
        URL read afresh: `db reset` gives it a new password) and no other kit command is changing it."""
        self.close()
        self._open(connection.database_url(self.database_url, start=False))
        self.last_poll_changes, self.last_poll_behind = 0, 0.0

    def subscribe(self, who: str | uuid.UUID | None = None, *, claims: dict[str, Any] | None = None,
                  tables: Sequence[str] | None = None, event: str = "*", filter: str | None = None,
                  select: Sequence[str] | None = None, schema: str = "public") -> Subscriber:
        """Subscribe a user (UUID, email, 'anon' or 'service_role'), or explicit JWT `claims`.

        `tables`: published tables (default: all of them); `event`: INSERT, UPDATE, DELETE or *;
        `filter`: Supabase's column filters, e.g. 'session_id=eq.<uuid>,status=not.eq.absent' (one table);
        `select`: the columns its events carry, besides the primary key (one table).
        """
        subscriber = new_subscriber(self.conn, self.feed.publication, who, claims=claims, tables=tables,
                                    event=event, filter=filter, select=select, schema=schema)
        self.subscribers.append(subscriber)
        return subscriber

    def subscribe_channel(self, claims: dict[str, Any], entries: Sequence[Any]) -> Subscriber:
        """Subscribe a Supabase channel: JWT `claims` and its `postgres_changes` entries (dicts of event, schema,
        table, filter, select), subscription i being entry i; refused with Supabase's message (`ChannelRefused`)."""
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
        try:
            return self._poll_routed()
        except psycopg.OperationalError as error:  # a connection other than the slot's, lost mid-poll
            raise lost("a connection of the change feed", error) from None

    def _poll_routed(self) -> tuple[dict[Subscriber, list[Delivered]], list[Broadcast]]:
        self.reopen_lost_connections()  # before the slot hands out a batch they must authorise
        changes = self.feed.poll()
        self.last_poll_changes = len(changes)
        self.last_poll_behind = 0.0
        if changes:
            routed = self._route(changes)
            self.last_poll_behind = max(0.0, time.time() - changes[0].commit_timestamp.timestamp())
            return routed
        return {}, []

    def _route(self, changes: list[Change]) -> tuple[dict[Subscriber, list[Delivered]], list[Broadcast]]:
        """The changes delivered to the subscribers; the broadcasts apart."""
        messages = [change for change in changes if is_message(change.relation)]
        if messages:
            changes = [change for change in changes if not is_message(change.relation)]
        broadcasts = [b for b in (broadcast_of(m, self.feed.values(m)[0]) for m in messages) if b is not None]
        if not changes or not self.subscribers:
            return {}, broadcasts
        return self._authorised(changes), broadcasts

    def _authorised(self, changes: list[Change]) -> dict[Subscriber, list[Delivered]]:
        """Delivery of a batch the slot handed out; a connection other than the slot's lost on the way is opened
        again and the batch authorised again, so nothing is lost while the slot stands."""
        try:
            return self._delivery.deliver(changes, self.subscribers)
        except (FeedLost, psycopg.OperationalError):
            if self.feed.conn.broken or self.feed.conn.closed:
                raise
            self.reopen_lost_connections()  # FeedLost if the database is away
            return self._delivery.deliver(changes, self.subscribers)

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
        """Close its connections (also after a `FeedLost`: whatever is already gone is skipped)."""
        with contextlib.suppress(psycopg.Error):
            self._delivery.close()
        self.conn.close()
        with contextlib.suppress(psycopg.Error):
            self.feed.close()

    def __enter__(self) -> Realtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ended(conn: psycopg.Connection) -> bool:
    """Whether the server ended this idle connection: its socket readable with nothing asked (the server's FATAL,
    then EOF) and a trivial statement failing; a notice would make it readable too, and pass."""
    if conn.closed or conn.broken:
        return True
    readable = select.poll()  # not select.select: a gateway's descriptors go past FD_SETSIZE (1024)
    try:
        readable.register(conn.fileno(), select.POLLIN)
    except psycopg.OperationalError:  # no socket any more
        return True
    if not readable.poll(0):
        return False
    try:
        conn.execute("select 1")
    except psycopg.OperationalError:
        return True
    return False


RECONNECTING = "reconnecting (every 0.1 s, doubling to 5 s)"  # as `reconnect_delays` waits


def reconnect_delays(first: float = 0.1, most: float = 5.0) -> Iterator[float]:
    """How long to wait before each attempt to reconnect: 0.1 s, doubling, then every 5 s (Supabase Realtime's
    poller backs off from 100 ms to 5 s too)."""
    delay = first
    while True:
        yield delay
        delay = min(most, delay * 2)


class AwayReasons:
    """Why reconnecting keeps failing, to be told only when it changes: the first failure's reason is the loss's
    own (already told), a later one new (e.g. the database back with another password)."""

    def __init__(self) -> None:
        self._last: str | None = None

    def changed(self, error: Exception) -> str | None:
        """What to tell of `error` if its reason is not the one before; None for the first and for the same again."""
        reason, last = one_line(error), self._last
        self._last = reason
        return f"still without the database: {reason}" if last is not None and reason != last else None


def listen(who: str | uuid.UUID, *, database_url: str | None = None, tables: Sequence[str] = (),
           event: str = "*", filter: str | None = None, select: Sequence[str] | None = None,
           seconds: float | None = None, publication: str = PUBLICATION, poll_interval: float = POLL_INTERVAL,
           on_listening: Callable[[], None] | None = None, on_lost: Callable[[FeedLost], None] | None = None,
           on_back: Callable[[float], None] | None = None) -> Iterator[Event]:
    """The events `who` may see, as they are committed, for `seconds` (or until the caller stops iterating).

    The slot is created before the first event and dropped when the generator ends, however it ends;
    `on_listening` is called once it exists and the subscription is in place. A database that goes away (a
    restart, `db reset`) is waited for: `on_lost` hears of it, the feed reconnects as `reconnect_delays` says, and
    `on_back` gets the seconds it was away; what was committed meanwhile is not delivered.
    """
    deadline = None if seconds is None else time.monotonic() + seconds
    with Realtime(database_url, publication, poll_interval=poll_interval) as realtime:
        realtime.subscribe(who, tables=list(tables) or None, event=event, filter=filter, select=select)
        if on_listening is not None:
            on_listening()
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                for _subscriber, item in realtime.stream(remaining):
                    yield item
                return
            except FeedLost as error:
                if on_lost is not None:
                    on_lost(error)
                lost_at = time.monotonic()
                if not _reconnect(realtime, deadline, on_lost):
                    return
                if on_back is not None:
                    on_back(time.monotonic() - lost_at)


def _reconnect(realtime: Realtime, deadline: float | None, on_lost: Callable[[FeedLost], None] | None) -> bool:
    """Reconnect, backing off, until it works (True) or the deadline passes (False); a new reason for failing
    (e.g. the database back with another password) goes to `on_lost`."""
    delays, reasons = reconnect_delays(), AwayReasons()
    while True:
        delay = next(delays)
        if deadline is not None and time.monotonic() + delay > deadline:
            return False
        time.sleep(delay)
        try:
            realtime.reconnect()
            return True
        except (KitError, psycopg.Error) as error:  # still away, or going away again: try later
            if (told := reasons.changed(error)) is not None and on_lost is not None:
                on_lost(FeedLost(told))


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
