"""Step 5, delivery: per poll, which subscriber receives which change, and the event it receives.

Subscribers with the same subscriptions cover the same rows, so a poll works in their groups. `_Poll` holds one
poll's data: its changes and their values, the subscribers and their groups, and the events decided so far.
Per table, `_TableRows` gathers what the poll asks the authorisation function (authorisation.py): the keys of new
rows and the old rows, and which of them each group covers. `Delivery` runs the function on one or more
connections ("lanes", each with its share of the subscribers, in parallel) and turns what it allowed into each
subscriber's events, in commit order. TRUNCATE, and a DELETE whose old row the kit cannot judge, go by privilege
alone: Supabase's behaviour.

When the catalog changed between building a function and running it (`_CatalogChanged`), the function is dropped
and the poll's rows are authorised again by a new one.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import psycopg

from ..connection import connect
from ..errors import KitError, one_line
from .authorisation import TABLES_PER_CALL, Authoriser, Function
from .catalog import Access, TablePlan
from .decoding import UNCHANGED_TOAST, Change, Relation, as_text
from .feed import ChangeFeed
from .subscriptions import Event, Subscriber, Subscription

log = logging.getLogger(__package__)  # attendance_kit.realtime: the logger's name from before the package

SUBSCRIBERS_PER_WORKER = 200  # below this, another connection costs more than it saves

Allowed = tuple[int, int, int, int]  # (subscriber, kind, table, number), as the authorisation function returns
Values = tuple[dict[str, Any], dict[str, Any]]  # a change's new and old row, as Python values


class _CatalogChanged(Exception):
    """A function was built for another catalog than the one it met: drop it, build it again, ask again."""


class _Poll:
    """One poll's data: its changes and their values, the subscribers and their groups, the events so far."""

    def __init__(self, changes: list[Change], values: list[Values], subscribers: list[Subscriber]) -> None:
        self.changes = changes
        self.values = values
        self.subscribers = sorted(subscribers, key=lambda s: s.role)  # a role switch costs a re-plan
        self.roles = sorted({s.role for s in self.subscribers})
        # Read here, before any lane's thread: each subscriber's claims escaped once, at its first poll.
        self.claims = [s.claims_literal for s in self.subscribers]
        groups: dict[tuple[Subscription, ...], int] = {}
        self.member_group = [groups.setdefault(s.subscriptions, len(groups)) for s in self.subscribers]
        self.groups = list(groups)
        # Only tables someone subscribed to are authorised (and read).
        self.oids = sorted({c.relation.oid for c in changes
                            if any(s.covers(c.relation, c.type) for g in self.groups for s in g)})
        self.events: dict[int, dict[int, Event]] = defaultdict(dict)  # subscriber -> position -> event

    def table_rows(self, plans: list[TablePlan]) -> list[_TableRows]:
        """Per table, the keys and old rows to authorise, and which of them each group covers."""
        tables = [_TableRows(plan, len(self.groups)) for plan in plans]
        by_oid = {rows.plan.oid: rows for rows in tables}
        for position, change in enumerate(self.changes):
            if change.relation.oid in by_oid:  # else the table is gone: nobody can be authorised for it
                by_oid[change.relation.oid].add(position, change, self.values[position], self.groups)
        return tables

    def by_privilege(self, by_oid: dict[int, _TableRows]) -> list[list[int]]:
        """Per group, the TRUNCATEs and DELETEs decided by privilege alone (Supabase's behaviour for DELETE).

        A filter on a column the fallback does not send (anything but the primary key) is not applied, as in
        Supabase: applying it would tell a subscriber something about a row it may not read.
        """
        result: list[list[int]] = [[] for _ in self.groups]
        for position, change in enumerate(self.changes):
            if change.type not in ("DELETE", "TRUNCATE") or change.relation.oid not in by_oid:
                continue
            key = by_oid[change.relation.oid].plan.key
            for g, subscriptions in enumerate(self.groups):
                if any(s.covers(change.relation, change.type) and (
                        change.type == "TRUNCATE" or s.filter is None or s.filter.column not in key
                        or s.filter.matches(self.values[position][1])) for s in subscriptions):
                    result[g].append(position)
        return result

    def delivered(self) -> dict[Subscriber, list[Event]]:
        return {self.subscribers[s]: [events[p] for p in sorted(events)] for s, events in sorted(self.events.items())}


class _TableRows:
    """One table's part of a poll: the keys and old rows to authorise, which of them each group covers, and the
    changes they came from. `arguments` hands them to the function (see authorisation's `_TableNames`)."""

    def __init__(self, plan: TablePlan, groups: int) -> None:
        self.plan = plan
        self.keys: dict[tuple[str | None, ...], int] = {}  # the new rows' keys as text -> number (from 1)
        # [group]: key number -> the positions of the changes with that key which the group covers
        self.key_positions: list[dict[int, list[int]]] = [defaultdict(list) for _ in range(groups)]
        self.olds: list[list[str | None]] = []  # old rows as text, in the table's column order
        self.old_positions: list[int] = []  # the change of each old row
        self.old_covered: list[set[int]] = [set() for _ in range(groups)]  # [group]: old-row numbers
        self.rebuildable: set[int] = set()  # positions whose whole old row pgoutput sent
        self._old_numbers: dict[int, int] = {}  # position -> old-row number

    def add(self, position: int, change: Change, values: Values, groups: list[tuple[Subscription, ...]]) -> None:
        key, old_row = self._key(change), self._old_row(change)
        if old_row is not None:
            self.rebuildable.add(position)
        new, old = values
        for g, subscriptions in enumerate(groups):
            covering = [s for s in subscriptions if s.covers(change.relation, change.type)]
            if not covering:
                continue
            if change.type in ("INSERT", "UPDATE") and key is not None and _any_matches(covering, new):
                self._cover_key(g, key, position)
                if old_row is not None:
                    self._cover_old(g, old_row, position)
            elif change.type == "DELETE" and old_row is not None and _any_matches(covering, old):
                self._cover_old(g, old_row, position)

    def _key(self, change: Change) -> tuple[str | None, ...] | None:
        """The new row's primary key as text, or None when it cannot be looked up."""
        if not self.plan.key or change.new is None:
            return None
        row = dict(zip(change.relation.column_names, change.new, strict=True))
        if any(column not in row or row[column] is None or row[column] is UNCHANGED_TOAST
               for column in self.plan.key):
            return None
        return tuple(as_text(row[column]) for column in self.plan.key)

    def _old_row(self, change: Change) -> list[str | None] | None:
        """The old row as text in the table's column order, if pgoutput sent all of it (REPLICA IDENTITY FULL)."""
        if change.old is None or not change.old_is_full:
            return None
        row = dict(zip(change.relation.column_names, change.old, strict=True))
        if any(name not in row or row[name] is UNCHANGED_TOAST for name, _ in self.plan.columns):
            return None
        return [as_text(row[name]) for name, _ in self.plan.columns]

    def _cover_key(self, group: int, key: tuple[str | None, ...], position: int) -> None:
        number = self.keys.setdefault(key, len(self.keys) + 1)
        self.key_positions[group][number].append(position)

    def _cover_old(self, group: int, row: list[str | None], position: int) -> None:
        if position not in self._old_numbers:
            self.olds.append(row)
            self.old_positions.append(position)
            self._old_numbers[position] = len(self.olds)
        self.old_covered[group].add(self._old_numbers[position])

    def arguments(self) -> list[Any]:
        """The keys (1-D for a one-column key, else 2-D), each group's keys (one-column key, NULL padded to a
        rectangle, as PostgreSQL has no ragged arrays), a mask of them per group, the old rows and a mask of them
        per group."""
        keys = list(self.keys)
        if len(self.plan.key) == 1:
            per_group = [[keys[i - 1][0] for i in covered] for covered in self.key_positions]
            width = max(map(len, per_group), default=0)
            arguments: list[Any] = [[key[0] for key in keys],
                                    [row + [None] * (width - len(row)) for row in per_group] if width else []]
        else:
            arguments = [[list(key) for key in keys], []]
        return arguments + [_mask(self.key_positions, len(keys)), self.olds, _mask(self.old_covered, len(self.olds))]


def _any_matches(subscriptions: list[Subscription], row: dict[str, Any]) -> bool:
    return any(s.filter is None or s.filter.matches(row) for s in subscriptions)


def _mask(covered: Sequence[Any], count: int) -> list[list[bool]]:
    """Per group, whether it covers item 1..count."""
    return [[i in group for i in range(1, count + 1)] for group in covered] if count else []


class Delivery:
    """What a `Realtime` keeps from poll to poll to deliver: its authorising connections and its column lists."""

    def __init__(self, feed: ChangeFeed, database_url: str | None, *, workers: int,
                 subscribers_per_worker: int) -> None:
        self.feed = feed
        self.lanes = [Authoriser(feed.conn)]  # the feed's own connection is the first
        self._database_url = database_url
        self._workers = max(1, workers)
        self._per_worker = max(1, subscribers_per_worker)
        self._pool: ThreadPoolExecutor | None = None
        self._column_lists: dict[tuple[Relation, tuple[str, ...]], tuple[tuple[tuple[str, str], ...], ...]] = {}

    def deliver(self, changes: list[Change], subscribers: list[Subscriber]) -> dict[Subscriber, list[Event]]:
        """Each subscriber's events of these changes, in commit order."""
        poll = _Poll(changes, [self.feed.values(change) for change in changes], subscribers)
        lanes = self._lanes_for(len(poll.subscribers))
        for first in range(0, len(poll.oids), TABLES_PER_CALL):
            tables, allowed = self._authorise(lanes, poll, poll.oids[first:first + TABLES_PER_CALL])
            self._assemble(poll, tables, allowed)
        return poll.delivered()

    def _lanes_for(self, count: int) -> list[Authoriser]:
        """One authorising connection per `subscribers_per_worker` subscribers, up to `workers`."""
        wanted = min(self._workers, max(1, -(-count // self._per_worker)))
        while len(self.lanes) < wanted:
            self.lanes.append(Authoriser(connect(self._database_url)))
        if wanted > 1 and self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._workers - 1, thread_name_prefix="kit-realtime")
        return self.lanes[:wanted]

    def _authorise(self, lanes: list[Authoriser], poll: _Poll, oids: list[int]
                   ) -> tuple[list[_TableRows], list[Allowed]]:
        """The poll's rows of these tables and what the function allows of them, built again (up to three times)
        when the catalog changed under it."""
        for _attempt in range(3):
            functions = [lane.function(oids, poll.roles) for lane in lanes]
            tables = poll.table_rows(functions[0].plans)
            try:
                return tables, self._run_lanes(lanes, functions, tables, poll)
            except _CatalogChanged:
                for lane, function in zip(lanes, functions, strict=True):
                    lane.forget(function)  # built from a catalog that is no more
        raise KitError("the tables' policies keep changing: could not authorise the batch")

    def _run_lanes(self, lanes: list[Authoriser], functions: list[Function], tables: list[_TableRows],
                   poll: _Poll) -> list[Allowed]:
        """Every lane runs its function for its share of the subscribers; together, what they allow."""
        # Each lane built its function from the catalog; all must agree with the rows' plans.
        if any(function.plans != functions[0].plans for function in functions):
            raise _CatalogChanged
        if not tables:
            return []
        arguments = [argument for rows in tables for argument in rows.arguments()]
        shares = [list(range(len(poll.subscribers)))[i::len(lanes)] for i in range(len(lanes))]
        jobs = list(zip(lanes, functions, shares, strict=True))
        futures = []
        if len(jobs) > 1:
            assert self._pool is not None
            futures = [self._pool.submit(_call, *job, arguments, poll) for job in jobs[1:]]
        try:
            allowed = _call(*jobs[0], arguments, poll)
        finally:
            wait(futures)  # no lane is still in its transaction when its connection is used again
        allowed += [row for future in futures for row in future.result()]
        if any(s < 0 for s, _, _, _ in allowed):  # a function's answer (-1, -1, -1, -1): not its catalog
            raise _CatalogChanged
        return allowed

    def _assemble(self, poll: _Poll, tables: list[_TableRows], allowed: list[Allowed]) -> None:
        """Add to the poll each subscriber's events of these tables, from what the function allowed."""
        rows_seen: dict[int, set[int]] = defaultdict(set)  # subscriber -> positions whose current row it reads
        olds_seen: dict[int, set[int]] = defaultdict(set)  # subscriber -> positions whose old row it reads
        for s, kind, t, n in allowed:
            if kind == 0:
                rows_seen[s].update(tables[t].key_positions[poll.member_group[s]][n])
            else:
                olds_seen[s].add(tables[t].old_positions[n - 1])
        by_oid = {rows.plan.oid: rows for rows in tables}
        by_privilege = poll.by_privilege(by_oid)
        for s, subscriber in enumerate(poll.subscribers):
            positions = rows_seen[s] | {p for p in olds_seen[s] if poll.changes[p].type == "DELETE"}
            for position in by_privilege[poll.member_group[s]]:
                rows = by_oid[poll.changes[position].relation.oid]
                if _privilege_allows(poll.changes[position], rows, rows.plan.access[subscriber.role], position):
                    positions.add(position)
            for position in positions:
                change = poll.changes[position]
                plan = by_oid[change.relation.oid].plan
                poll.events[s][position] = self._event(change, poll.values[position], plan,
                                                       plan.access[subscriber.role], full_old=position in olds_seen[s])

    def _event(self, change: Change, values: Values, plan: TablePlan, access: Access, *, full_old: bool) -> Event:
        relation, (new, old) = change.relation, values
        visible = set(access.visible)
        if change.type == "TRUNCATE":
            record, old_record, columns = {}, {}, []
        else:
            record = {k: v for k, v in new.items() if k in visible}
            if full_old:
                old_record = {k: v for k, v in old.items() if k in visible}
            elif change.type == "INSERT":
                old_record = {}
            else:  # the primary key only, from the old row or (unchanged key) the new one
                old_record = {k: old.get(k, new.get(k)) for k in plan.key if k in visible}
            columns = [dict(column) for column in self._columns(relation, access.visible)]
        return Event(schema=relation.schema, table=relation.name, type=change.type,
                     commit_timestamp=change.commit_timestamp, record=record, old_record=old_record,
                     columns=columns)

    def _columns(self, relation: Relation, visible: tuple[str, ...]) -> tuple[tuple[tuple[str, str], ...], ...]:
        """The `columns` of an event: name and type of each column the subscriber may select (cached)."""
        key = (relation, visible)
        if key not in self._column_lists:
            self._column_lists[key] = tuple((("name", c.name), ("type", self.feed.type_name(c.type_oid)))
                                            for c in relation.columns if c.name in visible)
        return self._column_lists[key]

    def close(self) -> None:
        """Close the lanes' own connections (not the feed's, the first)."""
        if self._pool is not None:
            self._pool.shutdown()
        for lane in self.lanes[1:]:
            lane.conn.close()


def _privilege_allows(change: Change, rows: _TableRows, access: Access, position: int) -> bool:
    """A TRUNCATE reaches whoever may select the table; a DELETE whose old row the function could not judge for
    this role, whoever may select its key."""
    if change.type == "TRUNCATE":
        return access.table_select
    return access.key_select and (access.predicate is None or position not in rows.rebuildable)


def _call(lane: Authoriser, function: Function, share: list[int], arguments: list[Any], poll: _Poll
          ) -> list[Allowed]:
    """Run the function for a share of the subscribers; on an error, once per subscriber to isolate it."""
    call = function.call()

    def run(indexes: list[int]) -> list[Allowed]:
        # The claims go as one array literal of the subscribers' ready elements (`Subscriber.claims_literal`).
        claims = "{" + ",".join(poll.claims[i] for i in indexes) + "}"
        roles = [poll.subscribers[i].role for i in indexes]
        groups = [poll.member_group[i] + 1 for i in indexes]
        with lane.conn.transaction():
            rows = lane.conn.execute(call, [claims, roles, groups, *arguments]).fetchall()
        return [(indexes[s - 1] if s > 0 else s, kind, t, n) for s, kind, t, n in rows]

    try:
        return run(share)
    except psycopg.OperationalError as error:
        raise _lost(error) from None
    except psycopg.Error as error:
        rows, failed = [], []
        for i in share:
            try:
                rows += run([i])
            except psycopg.OperationalError as lost:
                raise _lost(lost) from None
            except psycopg.Error:  # an error is no permission: that subscriber receives nothing
                failed.append(poll.subscribers[i].name)
        log.warning("realtime: %d subscriber(s) receive nothing of this batch (%s): %s", len(failed),
                    ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else ""), one_line(error))
        return rows


def _lost(error: psycopg.Error) -> KitError:
    """A lost connection ends the feed: the batch is consumed from the slot, so going on would drop events."""
    return KitError(f"realtime lost a connection while authorising a batch ({one_line(error)}): stopping "
                    "rather than dropping its events")
