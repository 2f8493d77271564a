"""Subscriptions: who listens to what, and the `Event` each of them receives.

Like Supabase's: a table (or every published one), an event (`INSERT`, `UPDATE`, `DELETE` or `*`; Supabase
Realtime never delivers a TRUNCATE) and an optional column filter in Supabase's syntax (filters.py).
`new_subscriber` checks all of it against the database when a subscriber asks, so a bad table, event or filter
fails at once (a bad filter value with PostgreSQL's own message), never mid-stream.

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

from ..connection import API_ROLES, resolve_user
from ..errors import KitError
from .decoding import Relation
from .filters import Filter, bind_filter, elixir_filters, parse_filter

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
    filter: Filter | None = None

    def covers(self, relation: Relation, kind: str) -> bool:
        return (kind in self.events and (self.schema is None or relation.schema == self.schema)
                and (self.table is None or relation.name == self.table))

    def matches(self, kind: str, new: dict[str, Any], old: dict[str, Any]) -> bool:
        """The filter holds for the change: on the new row, or for a DELETE on the logged old row."""
        return self.filter is None or self.filter.matches(old if kind == "DELETE" else new)


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
                   schema: str) -> Subscriber:
    """A subscriber for `Realtime.subscribe`, everything it asks for checked against the database."""
    name, role, claims = _identity(conn, who, claims)
    events = _events(event)
    _check_published(conn, publication, schema, tables)
    bound = None
    if filter:
        if not tables or len(tables) != 1:
            raise KitError("a filter needs exactly one table")
        bound = bind_filter(conn, schema, tables[0], role, parse_filter(filter))
    subscriptions = tuple(Subscription(schema, table, events, bound) for table in (tables or [None]))
    return Subscriber(name, role, claims, subscriptions)


def channel_subscriber(conn: psycopg.Connection, publication: str, claims: dict[str, Any],
                       entries: Sequence[Any]) -> Subscriber:
    """A subscriber for a channel of the gateway: its `postgres_changes` entries, in order, as subscriptions,
    checked as Supabase Realtime checks them. One bad entry fails them all, with Supabase's message
    (`ChannelRefused`)."""
    name, role, claims = _identity(conn, None, claims)
    return Subscriber(name, role, claims, tuple(_entry(conn, publication, role, entry) for entry in entries))


class ChannelRefused(KitError):
    """A channel's `postgres_changes` entry Supabase Realtime would refuse; the message is Supabase's."""


def _entry(conn: psycopg.Connection, publication: str, role: str, entry: Any) -> Subscription:
    if not isinstance(entry, dict) or not ({"schema", "table"} & entry.keys()):
        raise ChannelRefused("No subscription params provided. Please provide at least a `schema` or `table` to "
                             f"subscribe to: {json.dumps(entry)}")
    event = str(entry.get("event", "*")).upper()
    events = frozenset([event]) if event in EVENT_TYPES else frozenset(EVENT_TYPES)  # Supabase: unknown is *
    schema, table = str(entry.get("schema", "public")), str(entry.get("table", "*"))
    text = entry.get("filter")
    if text is not None and not isinstance(text, str):
        raise ChannelRefused(f"Error parsing `filter` params: {json.dumps(text)}")
    parsed = None
    if text and text.strip():
        try:
            parsed = parse_filter(text)
        except KitError as error:
            raise ChannelRefused(f"Error parsing `filter` params: {error}") from None
    described = (f"[event: {event if event in EVENT_TYPES else '*'}, schema: {schema}, table: {table}, "
                 f"filters: {elixir_filters(parsed)}, select: nil]")
    published = conn.execute(
        "select count(*) from pg_publication_tables where pubname = %s and (schemaname = %s or %s = '*') "
        "and (tablename = %s or %s = '*')", [publication, schema, schema, table, table]).fetchone()[0]
    if not published:
        raise ChannelRefused("Unable to subscribe to changes with given parameters. Please check Realtime is "
                             f"enabled for the given connect parameters: {described}")
    bound = None
    if parsed is not None:
        try:
            bound = bind_filter(conn, schema, table, role, parsed)
        except (KitError, psycopg.Error) as error:
            raise ChannelRefused("Unable to subscribe to changes with given parameters. An exception happened so "
                                 f"please check your connect parameters: {described}. Exception: {error}") from None
    return Subscription(None if schema == "*" else schema, None if table == "*" else table, events, bound)


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
