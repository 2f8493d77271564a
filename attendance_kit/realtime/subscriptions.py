"""Subscriptions: who listens to what, and the `Event` each of them receives.

Like Supabase's: a table (or every published one), an event (`INSERT`, `UPDATE`, `DELETE` or `*`; Supabase
Realtime never delivers a TRUNCATE), optional column filters in Supabase's syntax (filters.py) and an optional
`select`, the columns its events carry (with the primary key always). `new_subscriber` checks all of it against
the database when a subscriber asks, so a bad table, event, filter or column fails at once (as Supabase answers
it), never mid-stream.

`Event` lives here rather than with the change feed: the change feed produces `Change`s and knows nothing of
subscribers, while an event is a change as one subscriber receives it (only the columns it may select). Delivery
builds them; wire.py's `event_json` writes one as Supabase Realtime's `data` of a `postgres_changes` frame.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple, TypedDict

import psycopg
from psycopg import sql

from ..connection import API_ROLES, resolve_user
from ..errors import KitError
from .decoding import Relation
from .elixir import inspect, to_log
from .filters import OPERATORS, FilterRefused, FilterSyntaxError, Term, check_filter, parse_filter

EVENT_TYPES = ("INSERT", "UPDATE", "DELETE")


class _EventKeys(TypedDict):
    schema: str
    table: str
    type: str  # INSERT, UPDATE or DELETE
    commit_timestamp: str | None  # UTC, milliseconds: 2026-11-25T10:00:00.123Z (None with a 400 or 401 error)
    columns: list[dict[str, str]]  # [{"name": ..., "type": pg_type.typname}] of the columns it may select
    errors: list[str] | None  # e.g. ["Error 413: Payload Too Large"]


class Event(_EventKeys, total=False):
    """One change as a subscriber receives it: the `data` of Supabase Realtime's `postgres_changes` payload.

    `record`, the new row, only with INSERT and UPDATE; `old_record`, what the replica identity logged of the old
    row (the primary key by default; of a DELETE under RLS, the primary key alone), only with UPDATE and DELETE.
    Values are Python values, as a SELECT returns them; `event_json` writes them as Supabase does. Subscribers of
    one role receive the same object for a change: read it, do not change it.
    """

    record: dict[str, Any]
    old_record: dict[str, Any]


class Delivered(NamedTuple):
    """An event and which of the subscriber's subscriptions it answers (their indexes): a gateway sends one frame
    per channel per change, with the ids of those entries."""

    event: Event
    subscriptions: tuple[int, ...]


@dataclass(frozen=True)
class Subscription:
    schema: str | None  # None: every schema
    table: str | None  # None: every table in the publication (of the schema)
    events: frozenset[str]
    filters: tuple[Term, ...] = ()  # all must hold (delivery asks the database: filters.py's `FilterCheck`)
    select: tuple[str, ...] | None = None  # the columns its events carry besides the key, sorted; None: all

    def covers(self, relation: Relation, kind: str) -> bool:
        return (kind in self.events and (self.schema is None or relation.schema == self.schema)
                and (self.table is None or relation.name == self.table))


@dataclass(eq=False)
class Subscriber:
    """Who receives events: a role and JWT claims, and what they subscribed to (a Supabase channel's
    `postgres_changes` entries, in order)."""

    name: str
    role: str
    claims: dict[str, Any]
    subscriptions: tuple[Subscription, ...]

    @cached_property
    def claims_literal(self) -> str:
        """The claims as JSON, quoted as an element of a text[] literal (computed once per subscriber): escaping
        500 JWTs again at every poll would cost more than the poll's queries."""
        encoded = json.dumps(self.claims)
        return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def new_subscriber(conn: psycopg.Connection, publication: str, who: str | uuid.UUID | None, *,
                   claims: dict[str, Any] | None, tables: Sequence[str] | None, event: str, filter: str | None,
                   schema: str, select: Sequence[str] | None = None) -> Subscriber:
    """A subscriber for `Realtime.subscribe`, everything it asks for checked against the database."""
    name, role, claims = _identity(conn, who, claims)
    events = _events(event)
    _check_published(conn, publication, schema, tables)
    terms: tuple[Term, ...] = ()
    if (filter or select) and (not tables or len(tables) != 1):
        raise KitError("a filter or a select needs exactly one table")
    try:
        terms = parse_filter(filter or "")
        if tables and (terms or select):
            check_filter(conn, _qualified(schema, tables[0]), role, terms, select)
    except FilterSyntaxError as error:
        raise KitError(f"{error}: write column=[not.]operator.value, several joined by commas (AND); operators: "
                       f"{', '.join(OPERATORS)}") from None
    except FilterRefused as error:
        raise KitError(f"filter {filter!r}{f' select {list(select)}' if select else ''}: {error}") from None
    chosen = tuple(sorted(select)) if select else None
    subscriptions = tuple(Subscription(schema, table, events, terms, chosen) for table in (tables or [None]))
    return Subscriber(name, role, claims, subscriptions)


def channel_subscriber(conn: psycopg.Connection, publication: str, claims: dict[str, Any],
                       entries: Sequence[Any]) -> Subscriber:
    """A subscriber for a channel of the gateway: its `postgres_changes` entries, in order, as subscriptions,
    checked as Supabase Realtime checks them. One bad entry fails them all, with Supabase's message
    (`ChannelRefused`)."""
    name, role, claims = _identity(conn, None, claims)
    parsed = [_parse_entry(entry) for entry in entries]  # as Supabase: all parsed before any is made ...
    made = [_entry(conn, publication, role, entry) for entry in reversed(parsed)]  # ... then made from the last
    return Subscriber(name, role, claims, tuple(reversed(made)))


class ChannelRefused(KitError):
    """A channel's `postgres_changes` entry Supabase Realtime would refuse; the message is Supabase's."""


class _Entry(NamedTuple):
    """A `postgres_changes` entry as Supabase's parser reads it."""

    event: str  # *, INSERT, UPDATE or DELETE (anything else is *)
    schema: str  # or *
    table: str  # or *
    terms: tuple[Term, ...]
    select: tuple[str, ...] | None  # sorted, as Supabase's trigger sorts it
    listed: list[str] | None  # the select as the client listed it

    def described(self) -> str:
        """The entry as Supabase's refusals quote it."""
        return (f"[event: {self.event}, schema: {self.schema}, table: {self.table}, "
                f"filters: {to_log(list(self.terms))}, select: {to_log(self.listed)}]")


def _entry(conn: psycopg.Connection, publication: str, role: str, parsed: _Entry) -> Subscription:
    """A parsed entry made a subscription, checked against the database as Supabase's insert and trigger check it."""
    tables = conn.execute(
        "select format('%%I.%%I', schemaname, tablename) from pg_publication_tables where pubname = %s "
        "and (schemaname = %s or %s = '*') and (tablename = %s or %s = '*')",
        [publication, parsed.schema, parsed.schema, parsed.table, parsed.table]).fetchall()
    if not tables:
        raise ChannelRefused("Unable to subscribe to changes with given parameters. Please check Realtime is "
                             f"enabled for the given connect parameters: {parsed.described()}")
    for (relation,) in tables:  # Supabase's trigger checks the filters on each table subscribed
        try:
            check_filter(conn, relation, role, parsed.terms, parsed.select)
        except FilterRefused as error:
            raise ChannelRefused("Unable to subscribe to changes with given parameters. An exception happened so "
                                 f"please check your connect parameters: {parsed.described()}. "
                                 f"Exception: {error}") from None
    events = frozenset([parsed.event]) if parsed.event in EVENT_TYPES else frozenset(EVENT_TYPES)
    return Subscription(None if parsed.schema == "*" else parsed.schema,
                        None if parsed.table == "*" else parsed.table, events, parsed.terms, parsed.select)


def _parse_entry(entry: Any) -> _Entry:
    """Supabase's `parse_subscription_params`: its cases, in its order, and its refusals (`ChannelRefused`)."""
    if not isinstance(entry, dict):
        raise ChannelRefused("No subscription params provided. Please provide at least a `schema` or `table` to "
                             f"subscribe to: {inspect(entry, pretty=False)}")
    event = entry.get("event")
    event = event.upper() if isinstance(event, str) and event.upper() in EVENT_TYPES else "*"
    select = entry.get("select")
    if isinstance(select, str):
        raise ChannelRefused("Error parsing `select` params: expected a list of column name strings, e.g. "
                             'select: ["col1", "col2"]')
    listed = [c for c in select if isinstance(c, str)] if isinstance(select, list) else []
    schema, table, text = entry.get("schema"), entry.get("table"), entry.get("filter")
    if isinstance(schema, str) and isinstance(table, str) and isinstance(text, str):
        try:
            terms = parse_filter(text)
        except FilterSyntaxError as error:
            raise ChannelRefused(str(error)) from None
    elif isinstance(schema, str) and isinstance(table, str) and "filter" not in entry:
        terms = ()
    elif isinstance(schema, str) and not ({"table", "filter"} & entry.keys()):
        table, terms = "*", ()
    elif isinstance(table, str) and not ({"schema", "filter"} & entry.keys()):
        schema, terms = "public", ()
    elif {"user_token", "auth_token"} & entry.keys():
        raise ChannelRefused("No subscription params provided. Please provide at least a `schema` or `table` to "
                             "subscribe to: <redacted>")
    else:
        raise ChannelRefused("No subscription params provided. Please provide at least a `schema` or `table` to "
                             f"subscribe to: {inspect(entry, pretty=False)}")
    if listed and "*" in (schema, table):
        raise ChannelRefused("Column selection is not supported for wildcard subscriptions. Provide an explicit "
                             "schema and table name.")
    return _Entry(event, schema, table, terms, tuple(sorted(listed)) or None, listed or None)


def _qualified(schema: str, table: str) -> str:
    return sql.Identifier(schema, table).as_string(None)


def _identity(conn: psycopg.Connection, who: str | uuid.UUID | None, claims: dict[str, Any] | None
              ) -> tuple[str, str, dict[str, Any]]:
    """Name, role and JWT claims: from the claims given, else from the user's row."""
    if claims is not None:
        name, role = str(claims.get("email") or claims.get("sub") or claims.get("role")), str(claims.get("role"))
    elif who is not None:
        (role, claims), name = resolve_user(conn, who), str(who)
    else:
        raise KitError("subscribe needs a user (UUID, email, 'anon', 'service_role') or claims")
    if role not in API_ROLES:
        raise KitError(f"role {role!r} is not one of Supabase's API roles {', '.join(API_ROLES)}")
    return name, role, claims


def _events(event: str) -> frozenset[str]:
    event = event.upper()
    if event == "*":
        return frozenset(EVENT_TYPES)
    if event == "TRUNCATE":
        raise KitError("Supabase Realtime never delivers TRUNCATE: subscribe to INSERT, UPDATE, DELETE or *")
    if event not in EVENT_TYPES:
        raise KitError(f"unknown event {event!r}: use one of {', '.join(EVENT_TYPES)} or *")
    return frozenset([event])


def _check_published(conn: psycopg.Connection, publication: str, schema: str, tables: Sequence[str] | None
                     ) -> None:
    rows = conn.execute("select schemaname, tablename from pg_publication_tables where pubname = %s",
                        [publication]).fetchall()
    published = set(rows)
    for table in tables or ():
        if (schema, table) not in published:
            raise KitError(f"table {schema}.{table} is not in publication {publication!r}: "
                           f"published are {', '.join(sorted(t for _, t in published))}")
