"""Delivery: per poll, which subscriber receives which change, run across the lanes.

The rules are Supabase Realtime's (its `realtime.apply_rls`), so what the kit delivers is what production does:

- An INSERT or UPDATE reaches a subscription whose filters hold for the new row (the database says: filters.py),
  if the subscriber may select the
  row's primary key and, where the table has RLS enabled, can SELECT the row by that key when the poll runs
  (authorisation.py). A role that may not select the key receives every such change of the table, filters
  unapplied, as an error without values (`Error 401: Unauthorized`; a table without a key: `Error 400: ...`).
- A DELETE is not checked against RLS. It reaches every subscription whose filters hold for the old row as the
  replica identity logged it: with the default identity that is the primary key alone, so a filter on any other
  column never holds.
- A TRUNCATE reaches nobody.
- What an event carries (the columns the role may select, of those its `select` names, the 1 MB limit) is
  events.py's. A subscriber whose subscriptions answering a change select different columns receives an event
  for each selection, as Supabase sends one per selection.

Subscribers with the same subscriptions cover the same rows, so a poll works in their groups. `_Poll` holds one
poll's data: its changes and their values, the subscribers and their groups, and the events decided so far.
Per table, `_TableRows` gathers the keys of the new rows the poll asks the authorisation function about, and which
of them each group covers. `Delivery` runs the function on one or more connections (lanes: `Authoriser`s, each
with its share of the subscribers, in parallel) and turns what it allowed, and what needs no asking, into each
subscriber's events, in commit order.

When the catalog changed between building a function and running it (`_CatalogChanged`), the function is dropped
and the poll's rows are authorised again by a new one.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import psycopg

from ..connection import connect
from ..errors import KitError, one_line
from .authorisation import TABLES_PER_CALL, Authoriser, Function
from .catalog import TablePlan
from .decoding import UNCHANGED_TOAST, Change, as_text
from .events import NO_KEY, UNAUTHORIZED, EventBuilder, Values
from .feed import ChangeFeed, FeedLost, lost
from .filters import FilterCheck, Holding, Shape, Term, wal2json_text
from .subscriptions import EVENT_TYPES, Delivered, Event, Subscriber, Subscription

log = logging.getLogger(__package__)  # attendance_kit.realtime: the logger's name from before the package

SUBSCRIBERS_PER_LANE = 200  # below this, another connection costs more than it saves

Allowed = tuple[int, int, int]  # (subscriber, table, key number), as the authorisation function returns


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
        self.group_roles: list[set[str]] = [set() for _ in self.groups]
        for subscriber, group in zip(self.subscribers, self.member_group, strict=True):
            self.group_roles[group].add(subscriber.role)
        self._covering: dict[tuple[int, str], _Covering] = {}  # per table and event
        # Only tables someone subscribed to are authorised (and read).
        self.oids = sorted({c.relation.oid for c in changes if self.covering(c).groups})
        self.events: dict[int, dict[int, list[Delivered]]] = defaultdict(dict)  # subscriber -> position -> events
        self._answers: dict[tuple[int, int, bool], tuple[int, ...]] = {}  # a group's members share theirs
        self._answering: dict[int, dict[int, tuple[int, ...]]] = {}  # position -> group -> answered
        self._filtered = [s for s in {s for group in self.groups for s in group} if s.filters]
        self._carried: dict[int, dict[str, tuple[str, str | None]]] = {}  # position -> column -> (type, value)
        self._holding: Holding = {}
        self._equal: dict[Shape, dict[str | None, set[str]]] = {}  # an `eq` shape: change value -> filter values

    def covering(self, change: Change) -> _Covering:
        """The groups with a subscription covering the change's table and event (the same for all its changes)."""
        key = (change.relation.oid, change.type)
        if key not in self._covering:
            self._covering[key] = _Covering(self.groups, change)
        return self._covering[key]

    def answering(self, position: int) -> dict[int, tuple[int, ...]]:
        """The groups a change answers without an error, each with its subscriptions answered: looked for among
        those whose `eq` filter's value equals the change's, and those a filter cannot rule out so."""
        if position not in self._answering:
            covering = self.covering(self.changes[position])
            candidates = set(covering.unindexed)
            carried = self._carried.get(position, {})
            for column, by_value in covering.by_equal.items():
                if column in carried:
                    type_sql, value = carried[column]
                    for term_value in self._equal_values(Shape("eq", type_sql, False, ""), value):
                        candidates |= by_value.get(term_value, set())
            self._answering[position] = {group: answered for group in sorted(candidates)
                                         if (answered := self.answered(group, position, None))}
        return self._answering[position]

    def _equal_values(self, shape: Shape, value: str | None) -> set[str]:
        """The `eq` filter values PostgreSQL found equal to a change's value."""
        if shape not in self._equal:
            self._equal[shape] = defaultdict(set)
            for term_value, change_value in self._holding.get(shape, ()):
                self._equal[shape][change_value].add(term_value)
        return self._equal[shape].get(value, set())

    def ask_filters(self, check: FilterCheck) -> None:
        """Ask the database at once which filter values hold for which values of the poll's changes."""
        asked: dict[Shape, tuple[set[str], set[str | None]]] = {}
        needed: dict[tuple[int, str], dict[str, set[Shape]]] = {}  # per table and event: column -> shapes
        for position, change in enumerate(self.changes):
            key = (change.relation.oid, change.type)
            if key not in needed:
                needed[key] = self._shapes(change, check, asked)
            if needed[key]:
                carried = self._carried[position] = _carried(change, check)
                for column, shapes in needed[key].items():
                    for shape in shapes if column in carried else ():
                        asked[shape][1].add(carried[column][1])
        self._holding = check.holding(asked)

    def _shapes(self, change: Change, check: FilterCheck, asked: dict[Shape, tuple[set[str], set[str | None]]]
                ) -> dict[str, set[Shape]]:
        """What the filters of the subscriptions covering this table and event ask, by column; their filter values
        added to `asked`."""
        types = {column.name: column.type_oid for column in change.relation.columns}
        shapes: dict[str, set[Shape]] = defaultdict(set)
        for subscription in self._filtered:
            if subscription.covers(change.relation, change.type):
                for term in subscription.filters:
                    if term.column in types:
                        shape = Shape.of(term, check.type_sql(types[term.column]))
                        shapes[term.column].add(shape)
                        asked.setdefault(shape, (set(), set()))[0].add(term.value)
        return shapes

    def _holds(self, position: int, subscription: Subscription) -> bool:
        """Every term of the subscription's filter holds for the change (a column it does not carry: no)."""
        carried = self._carried.get(position, {})
        for term in subscription.filters:
            if term.column not in carried:
                return False
            type_sql, value = carried[term.column]
            if (term.value, value) not in self._holding.get(Shape.of(term, type_sql), ()):
                return False
        return True

    def table_rows(self, plans: list[TablePlan]) -> list[_TableRows]:
        """Per table, the new rows' keys to authorise and which of them each group covers."""
        tables = [_TableRows(plan, len(self.groups)) for plan in plans]
        by_oid = {rows.plan.oid: rows for rows in tables}
        for position, change in enumerate(self.changes):
            rows = by_oid.get(change.relation.oid)  # None: the table is gone, nobody can be authorised for it
            if rows is not None and change.type != "DELETE" and rows.plan.row_security:
                for group in self.answering(position):
                    rows.add(group, position, change)
        return tables

    def unasked(self, by_oid: dict[int, _TableRows]) -> dict[tuple[int, str], dict[int, str | None]]:
        """The changes of these tables each group receives without asking RLS, per role: DELETEs its filters
        match, changes of tables without RLS, and 400 and 401 errors (every subscription covering the change:
        Supabase applies no filter then). (group, role) -> position -> error."""
        decided: dict[tuple[int, str], dict[int, str | None]] = defaultdict(dict)
        for position, change in enumerate(self.changes):
            rows = by_oid.get(change.relation.oid)
            if rows is None:
                continue
            plan = rows.plan
            blind = {role for role in self.roles if not plan.access[role].key_select}  # may not select the key
            if change.type != "DELETE" and (not plan.key or blind):
                error = NO_KEY if not plan.key else UNAUTHORIZED
                for group in self.covering(change).groups:
                    for role in self.group_roles[group] if not plan.key else self.group_roles[group] & blind:
                        decided[group, role][position] = error
            if change.type == "DELETE" or (plan.key and not plan.row_security):
                for group in self.answering(position):
                    for role in self.group_roles[group] - (set() if change.type == "DELETE" else blind):
                        decided[group, role][position] = None
        return decided

    def answered(self, group: int, position: int, error: str | None) -> tuple[int, ...]:
        """The indexes of the group's subscriptions a change answers: those that cover it and whose filters hold
        (a DELETE's on the logged old row); with a 400 or 401 error, every one that covers it, as Supabase
        applies no filter then."""
        key = (group, position, error is None)
        if key not in self._answers:
            change = self.changes[position]
            self._answers[key] = tuple(i for i, s in enumerate(self.groups[group])
                                       if s.covers(change.relation, change.type)
                                       and (error is not None or self._holds(position, s)))
        return self._answers[key]

    def by_selection(self, group: int, indexes: tuple[int, ...]
                     ) -> list[tuple[tuple[str, ...] | None, tuple[int, ...]]]:
        """The subscriptions answered, by the columns they select, in Supabase's order (all columns first)."""
        selections: dict[tuple[str, ...] | None, list[int]] = {}
        for i in indexes:
            selections.setdefault(self.groups[group][i].select, []).append(i)
        return sorted(((select, tuple(chosen)) for select, chosen in selections.items()),
                      key=lambda item: ",".join(item[0] or ()))

    def delivered(self) -> dict[Subscriber, list[Delivered]]:
        return {self.subscribers[s]: [one for p in sorted(events) for one in events[p]]
                for s, events in sorted(self.events.items())}


class _Covering:
    """The groups with a subscription covering a table and event; and for finding those a change answers, the
    ones whose every such subscription has an `eq` filter, by the filter's column and value (`by_equal`), apart
    from the others (`unindexed`: unfiltered, or filtered otherwise)."""

    def __init__(self, groups: list[tuple[Subscription, ...]], change: Change) -> None:
        self.groups: list[int] = []
        self.unindexed: list[int] = []
        self.by_equal: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
        for group, subscriptions in enumerate(groups):
            covering = [s for s in subscriptions if s.covers(change.relation, change.type)]
            if not covering:
                continue
            self.groups.append(group)
            equal_terms = [_equal_term(subscription) for subscription in covering]
            if any(term is None for term in equal_terms):
                self.unindexed.append(group)
                continue
            for term in filter(None, equal_terms):
                self.by_equal[term.column][term.value].add(group)


def _equal_term(subscription: Subscription) -> Term | None:
    """A subscription's first plain `eq` term: a change it answers has that column's value equal to it."""
    return next((term for term in subscription.filters if term.operator == "eq" and not term.negate), None)


class _TableRows:
    """One table's part of a poll: the new rows' keys to authorise, which of them each group covers, and the
    changes they came from. `arguments` hands them to the function (see authorisation's `_TableNames`)."""

    def __init__(self, plan: TablePlan, groups: int) -> None:
        self.plan = plan
        self.keys: dict[tuple[str | None, ...], int] = {}  # the new rows' keys as text -> number (from 1)
        # [group]: key number -> the positions of the changes with that key which the group covers
        self.key_positions: list[dict[int, list[int]]] = [defaultdict(list) for _ in range(groups)]

    def add(self, group: int, position: int, change: Change) -> None:
        """The group covers this change: its new row's key is to be asked about."""
        key = self._key(change)
        if key is not None:
            number = self.keys.setdefault(key, len(self.keys) + 1)
            self.key_positions[group][number].append(position)

    def _key(self, change: Change) -> tuple[str | None, ...] | None:
        """The new row's primary key as text, or None when it cannot be looked up."""
        if not self.plan.checkable or change.new is None:
            return None
        names = change.relation.column_names
        if any(column not in names for column in self.plan.key):
            return None
        values = [change.new[names.index(column)] for column in self.plan.key]
        if any(value is None or value is UNCHANGED_TOAST for value in values):
            return None
        return tuple(map(as_text, values))

    def arguments(self) -> list[Any]:
        """The keys (1-D for a one-column key, else 2-D); the numbers of the keys each group covers, group after
        group, and where each group's start (PostgreSQL has no ragged arrays; a dense groups x keys mask would
        grow with both)."""
        keys = [key[0] for key in self.keys] if len(self.plan.key) == 1 else [list(key) for key in self.keys]
        numbers: list[int] = []
        starts = [1]
        for covered in self.key_positions:
            numbers += sorted(covered)
            starts.append(len(numbers) + 1)
        return [keys, numbers, starts]


def _carried(change: Change, check: FilterCheck) -> dict[str, tuple[str, str | None]]:
    """The columns a change carries for its filters, each its type and value as Supabase has them (wal2json's
    text): an INSERT's or UPDATE's new row but its unchanged TOASTed values, a DELETE's old row as logged."""
    columns = change.relation.columns
    if change.type == "DELETE":
        raw, kept = change.old or (), [change.old_is_full or column.in_identity for column in columns]
    else:
        raw, kept = change.new or (), [True] * len(columns)
    carried = {}
    for column, value, keep in zip(columns, raw, kept, strict=False):
        if keep and value is not UNCHANGED_TOAST:
            type_sql = check.type_sql(column.type_oid)
            carried[column.name] = (type_sql, wal2json_text(type_sql, as_text(value)))
    return carried


class Delivery:
    """What a `Realtime` keeps from poll to poll to deliver: its lanes and its `EventBuilder` (column lists)."""

    def __init__(self, feed: ChangeFeed, conn: psycopg.Connection, database_url: str | None, *, lanes: int,
                 subscribers_per_lane: int) -> None:
        self.feed = feed
        self.lanes = [Authoriser(conn)]  # the `Realtime`'s own connection (never the slot's) is the first
        self._database_url = database_url
        self._most_lanes = max(1, lanes)
        self._per_lane = max(1, subscribers_per_lane)
        self._pool: ThreadPoolExecutor | None = None
        self._events = EventBuilder(feed.type_name)
        self._filters = FilterCheck(conn)

    def deliver(self, changes: list[Change], subscribers: list[Subscriber]) -> dict[Subscriber, list[Delivered]]:
        """Each subscriber's events of these changes, in commit order, with the subscriptions each answers."""
        changes = [change for change in changes if change.type in EVENT_TYPES]  # no TRUNCATE, as in Supabase
        poll = _Poll(changes, [self.feed.values(change) for change in changes], subscribers)
        try:
            poll.ask_filters(self._filters)
        except psycopg.Error as error:  # only a lost connection: FilterCheck answers a statement's error itself
            raise lost("the connection while checking filters", error) from None
        lanes = self._lanes_for(len(poll.subscribers))
        for first in range(0, len(poll.oids), TABLES_PER_CALL):
            tables, allowed = self._authorise(lanes, poll, poll.oids[first:first + TABLES_PER_CALL])
            self._assemble(poll, tables, allowed)
        return poll.delivered()

    def _lanes_for(self, count: int) -> list[Authoriser]:
        """One lane per `subscribers_per_lane` subscribers, up to `lanes`."""
        wanted = min(self._most_lanes, max(1, -(-count // self._per_lane)))
        while len(self.lanes) < wanted:
            try:
                self.lanes.append(Authoriser(connect(self._database_url)))
            except KitError as error:  # the database going away as the lane opens
                raise lost("a new lane's connection", error) from None
        if wanted > 1 and self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._most_lanes - 1, thread_name_prefix="kit-realtime")
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
        if any(s < 0 for s, _, _ in allowed):  # a function's answer (-1, -1, -1): not its catalog
            raise _CatalogChanged
        return allowed

    def _assemble(self, poll: _Poll, tables: list[_TableRows], allowed: list[Allowed]) -> None:
        """Add to the poll each subscriber's events of these tables: what the function allowed (position -> no
        error), and what needs no asking."""
        decided: dict[int, dict[int, str | None]] = defaultdict(dict)  # subscriber -> position -> error
        for s, t, n in allowed:
            decided[s].update(dict.fromkeys(tables[t].key_positions[poll.member_group[s]][n]))
        by_oid = {rows.plan.oid: rows for rows in tables}
        unasked = poll.unasked(by_oid)
        # A change reads the same to every subscriber of a role and a selection.
        events: dict[tuple[int, str, str | None, tuple[str, ...] | None], Event] = {}
        for s, subscriber in enumerate(poll.subscribers):
            group, role = poll.member_group[s], subscriber.role
            for position, error in (decided[s] | unasked.get((group, role), {})).items():
                delivered = poll.events[s][position] = []
                for select, indexes in poll.by_selection(group, poll.answered(group, position, error)):
                    event = events.get((position, role, error, select))
                    if event is None:
                        change = poll.changes[position]
                        plan = by_oid[change.relation.oid].plan
                        event = self._events.event(change, poll.values[position], plan, plan.access[role], error,
                                                   select)
                        events[position, role, error, select] = event
                    delivered.append(Delivered(event, indexes))

    def connections(self) -> list[psycopg.Connection]:
        """The lanes' own connections (not the first, the `Realtime`'s)."""
        return [lane.conn for lane in self.lanes[1:]]

    def close(self) -> None:
        """Close the lanes' own connections (not the first, the `Realtime`'s)."""
        if self._pool is not None:
            self._pool.shutdown()
        for lane in self.lanes[1:]:
            lane.conn.close()


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
        return [(indexes[s - 1] if s > 0 else s, t, n) for s, t, n in rows]

    try:
        return run(share)
    except psycopg.Error as error:
        if lane.conn.broken:  # not an error of the statement's: the connection is gone
            raise _lost(error) from None
        rows, failed = [], []
        for i in share:
            try:
                rows += run([i])
            except psycopg.Error as again:  # an error is no permission: that subscriber receives nothing
                if lane.conn.broken:
                    raise _lost(again) from None
                failed.append(poll.subscribers[i].name)
        log.warning("realtime: %d subscriber(s) receive nothing of this batch (%s): %s", len(failed),
                    ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else ""), one_line(error))
        return rows


def _lost(error: psycopg.Error) -> FeedLost:
    """A lost connection ends the poll: its batch is consumed from the slot and cannot be authorised."""
    return lost("a connection while authorising a batch", error)
