"""The gateway's database worker: its one `Realtime`, on a thread of its own, and every database call it makes.

Each call (subscribing a channel, re-subscribing it with refreshed claims, counting a client in or out of
websocket_channels, asking a private channel's policies: topic_policies.py) is a command (channel_state.py's, and
`Reconcile`), run in turn between polls, so all sockets share one connection (plus delivery's lanes). A channel's
subscriber and whether it is counted are kept here and touched only here, so a command meets the state the commands
before it left, whatever the sockets do meanwhile. It polls as `Realtime.stream` does (`Realtime.next_poll_in`), and
hands each poll's deliveries on, per channel, and the poll's broadcasts from the database (realtime.messages, read
on the same slot), in commit order.

It knows nothing of asyncio: what it has to say, it says through the callables it is given (run on its own
thread; gateway.py moves them onto the event loop).

A database that goes away (a restart, `db reset`, a terminated connection: `FeedLost`, or a command's lost
connection) does not end it: it says so (`on_lost`), answers commands `DatabaseUnavailable` meanwhile, reconnects
as `reconnect_delays` says (a new slot: what was committed meanwhile is lost, as in Supabase), takes back its
counts in websocket_channels and says so (`on_back`); the channel state then subscribes and counts the open
channels again. It logs each change of state once, never each attempt. Anything else that fails ends it
(`on_failure`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from ..errors import KitError, one_line
from . import channels, topic_policies
from .broadcasts import Broadcast
from .channel_model import (
    Channel,
    CheckPolicies,
    Command,
    CountIn,
    CountOut,
    DatabaseUnavailable,
    Subscribe,
    Unsubscribe,
)
from .client import RECONNECTING, AwayReasons, Realtime, reconnect_delays
from .feed import FeedLost, lost
from .subscriptions import Delivered, Subscriber

log = logging.getLogger(__package__)

BEHIND = 5.0  # seconds from commit to delivery beyond which the feed is said to have fallen behind
CAUGHT_UP = 1.0  # ... and below which it has caught up again

Delivery = list[tuple[Channel, list[Delivered]]]  # one poll's events, per channel


@dataclass(frozen=True)
class Reconcile:
    """Take back the counts a gateway of this name left behind (at its start: it has no clients yet); the counts
    from then on are this name's."""

    gateway: str


class DatabaseWorker(threading.Thread):
    """Start it, wait for `ready` (then `error` says whether the database is usable), `submit` commands, `stop`."""

    def __init__(self, database_url: str | None, publication: str, broadcasts: str | None, poll_interval: float, *,
                 on_delivered: Callable[[Delivery], None], on_broadcasts: Callable[[list[Broadcast]], None],
                 on_done: Callable[[Command | Reconcile, Any, Exception | None], None],
                 on_lost: Callable[[FeedLost], None], on_back: Callable[[], None],
                 on_failure: Callable[[Exception], None], behind_after: float = BEHIND) -> None:
        """`on_done` gets each command's result (a policy check's `Allowed`; else None) or its error;
        `behind_after`: seconds from commit to delivery beyond which it says the feed fell behind."""
        super().__init__(name="kit-realtime-database-worker", daemon=True)
        self.database_url, self.publication, self.poll_interval = database_url, publication, poll_interval
        self.broadcasts = broadcasts
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._on_delivered, self._on_broadcasts = on_delivered, on_broadcasts
        self._on_done, self._on_failure = on_done, on_failure
        self._on_lost, self._on_back = on_lost, on_back
        self._commands: queue.SimpleQueue[Command | Reconcile | None] = queue.SimpleQueue()  # None: stop
        self._gateway = ""  # whose counts websocket_channels' bookkeeping holds (`Reconcile` names it)
        self._subscriber_of: dict[Channel, Subscriber] = {}
        self._channel_of: dict[Subscriber, Channel] = {}
        self._counted: set[Channel] = set()  # in websocket_channels' active_connections
        self.behind_after = behind_after
        self._behind = False  # said to have fallen behind, not yet to have caught up

    def submit(self, command: Command | Reconcile) -> None:
        """Run it in turn; `on_done` gets its outcome."""
        self._commands.put(command)

    def stop(self) -> None:
        """End after the commands queued so far (the sockets' last count-outs among them)."""
        self._commands.put(None)

    def run(self) -> None:
        try:
            realtime = Realtime(self.database_url, self.publication, broadcasts=self.broadcasts,
                                poll_interval=self.poll_interval)
        except BaseException as error:  # the gateway's start reports it
            self.error = error
            self.ready.set()
            return
        self.ready.set()
        try:
            while (loss := self._serve(realtime)) is not None:
                if not self._recover(realtime, loss):
                    return
        except Exception as error:  # not the database going away: a fault the gateway cannot serve through
            log.error("realtime gateway: the change feed failed: %s", one_line(error))
            self._on_failure(error)
        finally:
            realtime.close()
            self._drop_queued()

    def _serve(self, realtime: Realtime) -> FeedLost | None:
        """Poll, hand the deliveries on, run the commands queued meanwhile (waiting for more as long as
        `next_poll_in` says); again, until told to stop (None) or the database goes away (why)."""
        try:
            while True:
                started = time.monotonic()
                delivered, broadcasts = realtime.poll_routed()
                batch = [(self._channel_of[s], d) for s, d in delivered.items() if s in self._channel_of]
                if batch:
                    self._on_delivered(batch)
                if broadcasts:
                    self._on_broadcasts(broadcasts)
                self._say_if_behind(realtime.last_poll_behind)
                if not self._run_commands(realtime, wait=realtime.next_poll_in(started)):
                    return None
        except FeedLost as loss:
            return loss

    def _say_if_behind(self, behind: float) -> None:
        """Once when deliveries fall `behind_after` seconds behind their commits, once when they catch up: more
        subscribers or changes than this machine authorises in time make them ever later, never dropped."""
        if not self._behind and behind > self.behind_after:
            self._behind = True
            log.warning("realtime gateway: the change feed is %.1f s behind the database: more subscribers or "
                        "changes than this machine authorises in time (every change is still delivered, late)",
                        behind)
        elif self._behind and behind < min(CAUGHT_UP, self.behind_after):
            self._behind = False
            log.warning("realtime gateway: the change feed has caught up (%.1f s behind)", behind)

    def _recover(self, realtime: Realtime, loss: FeedLost) -> bool:
        """Without a database: commands answered unavailable, reconnecting as `reconnect_delays` says; True once
        back (counts taken back, `on_back` said), False if told to stop meanwhile."""
        log.warning("realtime gateway: %s; %s", loss, RECONNECTING)
        realtime.close()
        realtime.subscribers.clear()
        self._subscriber_of.clear()
        self._channel_of.clear()
        self._counted.clear()
        self._on_lost(loss)
        lost_at, delays, reasons = time.monotonic(), reconnect_delays(), AwayReasons()
        while True:
            attempt_at = time.monotonic() + next(delays)
            while (wait := attempt_at - time.monotonic()) > 0:  # commands meanwhile do not hurry the attempt
                if not self._run_commands(None, wait=wait):
                    return False
            try:
                realtime.reconnect()
                if self._gateway:
                    channels.reconcile(realtime.conn, self._gateway)
            except (KitError, psycopg.Error) as error:  # still away (or away again): the next attempt, later
                if (told := reasons.changed(error)) is not None:
                    log.warning("realtime gateway: %s", told)
                continue
            log.warning("realtime gateway: the database is back after %.1f s; subscribing the channels again",
                        time.monotonic() - lost_at)
            self._on_back()
            return True

    def _run_commands(self, realtime: Realtime | None, wait: float) -> bool:
        """Run the queued commands, waiting up to `wait` for the first; False once told to stop. Without a
        database (`realtime` None) each is answered `DatabaseUnavailable`; a command whose connection is lost
        raises `FeedLost` (after its caller hears the same)."""
        deadline = time.monotonic() + wait
        while True:
            timeout = deadline - time.monotonic()
            try:
                command = self._commands.get(timeout=timeout) if timeout > 0 else self._commands.get_nowait()
            except queue.Empty:
                return True
            deadline = 0.0  # after the first, only what is queued already
            if command is None:
                return False
            if realtime is None:
                self._on_done(command, None, DatabaseUnavailable())
                continue
            result, error = None, None
            try:
                realtime.reopen_lost_connections()
                result = self._run(realtime, command)
            except FeedLost:  # the database is away
                self._on_done(command, None, DatabaseUnavailable())
                raise
            except Exception as failure:  # the command's outcome; it never ends the worker
                if realtime.conn.broken:  # but its connection is gone, and so, for now, is the database
                    self._on_done(command, None, DatabaseUnavailable())
                    raise lost("the gateway's database connection", failure) from None
                error = failure
            self._on_done(command, result, error)

    def _run(self, realtime: Realtime, command: Command | Reconcile) -> Any:
        match command:
            case CheckPolicies(channel=channel, claims=claims, read=read, write=write):
                return topic_policies.check(realtime.conn, claims, channel.sub_topic, read=read, write=write)
            case Subscribe(channel=channel, claims=claims, entries=entries):
                self._forget(realtime, channel)  # from the next poll on, the new subscriber in its place
                subscriber = realtime.subscribe_channel(claims, entries)  # ChannelRefused: none
                self._subscriber_of[channel], self._channel_of[subscriber] = subscriber, channel
            case Unsubscribe(channel=channel):
                self._forget(realtime, channel)
            case CountIn(channel=channel, session=session, name=name):
                if channel not in self._counted and channels.joined(realtime.conn, self._gateway, session, name):
                    self._counted.add(channel)
            case CountOut(channel=channel, session=session, name=name):
                if channel in self._counted:
                    channels.left(realtime.conn, self._gateway, session, name)
                    self._counted.discard(channel)
            case Reconcile(gateway=gateway):
                self._reconcile(realtime, gateway)
        return None

    def _forget(self, realtime: Realtime, channel: Channel) -> None:
        subscriber = self._subscriber_of.pop(channel, None)
        if subscriber is not None:
            realtime.unsubscribe(subscriber)
            del self._channel_of[subscriber]

    def _reconcile(self, realtime: Realtime, gateway: str) -> None:
        try:
            channels.reconcile(realtime.conn, gateway)
        except psycopg.errors.UndefinedTable:
            raise KitError("this database lacks the gateway's bookkeeping (sql/007_realtime_gateway.sql): apply "
                           "the migrations ({command})", command="migrate") from None
        self._gateway = gateway

    def _drop_queued(self) -> None:
        """Whatever is still queued will not run: its callers hear so."""
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if command is not None:
                self._on_done(command, None, KitError("the gateway is stopping"))
