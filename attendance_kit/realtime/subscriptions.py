"""Step 3, subscriptions: who listens to what, and the `Event` each of them receives.

Like Supabase's: a table (or every published one), an event (`INSERT`, `UPDATE`, `DELETE` or `*`; Supabase
Realtime never delivers a TRUNCATE) and an optional column filter in Supabase's syntax (`session_id=eq.<uuid>`;
also `neq`, `lt`, `lte`, `gt`, `gte`, `in.(a,b)`). `new_subscriber` checks all of it against the database when a
subscriber asks, so a bad table, event or filter fails at once (a bad filter value with PostgreSQL's own
message), never mid-stream.

`Event` lives here rather than with the feed: the feed produces `Change`s and knows nothing of subscribers, while
an event is a change as one subscriber receives it (only the columns it may select). Delivery builds them;
`event_json` writes one as Supabase Realtime's `data` of a `postgres_changes` frame.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time
from decimal import Decimal
from functools import cached_property
from typing import Any, TypedDict

import psycopg
from psycopg import sql
from psycopg.pq import Format

from ..connection import API_ROLES, resolve_user
from ..errors import KitError
from .decoding import Relation

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
    Values are Python values, as a SELECT returns them; `event_json` writes them as Supabase does.
    """

    record: dict[str, Any]
    old_record: dict[str, Any]


def event_json(event: Event | dict[str, Any]) -> str:
    """The event (or any of its values) as JSON, values written as PostgreSQL's `to_jsonb` writes them."""
    return json.dumps(event, default=_json_default, ensure_ascii=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, time)):
        text = value.isoformat()
        if value.microsecond:  # PostgreSQL trims the fraction's trailing zeros
            head, _, rest = text.partition(".")
            text = f"{head}.{rest[:6].rstrip('0')}{rest[6:]}"
        return text
    if isinstance(value, Decimal):  # a JSON number, as to_jsonb writes numeric (exact to 15 digits)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)  # UUID, date, time, timedelta, ...


_FILTER = re.compile(r"^([A-Za-z_][A-Za-z0-9_$]*)=(eq|neq|lt|lte|gt|gte|in)\.(.*)$", re.S)


@dataclass(frozen=True)
class Filter:
    """A column filter in Supabase's syntax, e.g. `session_id=eq.5e00...`, its value typed as the column."""

    column: str
    operator: str
    values: tuple[Any, ...]

    def matches(self, row: dict[str, Any]) -> bool:
        value = row.get(self.column)
        if value is None:  # as in SQL, NULL matches no comparison
            return False
        target = self.values[0]
        match self.operator:
            case "eq":
                return value == target
            case "neq":
                return value != target
            case "lt":
                return value < target
            case "lte":
                return value <= target
            case "gt":
                return value > target
            case "gte":
                return value >= target
            case _:
                return value in self.values


@dataclass(frozen=True)
class Subscription:
    schema: str
    table: str | None  # None: every table in the publication
    events: frozenset[str]
    filter: Filter | None = None

    def covers(self, relation: Relation, kind: str) -> bool:
        return kind in self.events and (self.table is None or (relation.schema, relation.name) == (
            self.schema, self.table))


@dataclass(eq=False)
class Subscriber:
    """Who receives events: a role and JWT claims, and what they subscribed to."""

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
    if role not in API_ROLES:
        raise KitError(f"role {role!r} is not one of Supabase's API roles {', '.join(API_ROLES)}")
    events = _events(event)
    _check_published(conn, publication, schema, tables)
    bound = _filter(conn, schema, tables, filter) if filter else None
    subscriptions = tuple(Subscription(schema, table, events, bound) for table in (tables or [None]))
    return Subscriber(name, role, claims, subscriptions)


def _identity(conn: psycopg.Connection, who: str | uuid.UUID | None, claims: dict[str, Any] | None
              ) -> tuple[str, str, dict[str, Any]]:
    """Name, role and JWT claims: from the claims given, else from the user's row."""
    if claims is not None:
        return str(claims.get("email") or claims.get("sub") or ""), str(claims.get("role")), claims
    if who is not None:
        role, claims = resolve_user(conn, who)
        return str(who), role, claims
    raise KitError("subscribe needs a user (UUID, email, 'anon', 'service_role') or claims")


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


def _filter(conn: psycopg.Connection, schema: str, tables: Sequence[str] | None, text: str) -> Filter:
    match = _FILTER.match(text.strip())
    if not match:
        raise KitError(f"filter {text!r} is not column=operator.value (operators: eq, neq, lt, lte, gt, gte, "
                       "in), e.g. session_id=eq.5e000000-0000-4000-8000-000000000001")
    if not tables or len(tables) != 1:
        raise KitError("a filter needs exactly one table")
    column, operator, raw = match.groups()
    row = conn.execute("""
        select a.atttypid, format_type(a.atttypid, a.atttypmod), t.typcategory
        from pg_attribute a join pg_type t on t.oid = a.atttypid
        where a.attrelid = %s::regclass and a.attname = %s and a.attnum > 0 and not a.attisdropped
    """, [sql.Identifier(schema, tables[0]).as_string(conn), column]).fetchone()
    if row is None:
        raise KitError(f"filter column {column!r} is not a column of {schema}.{tables[0]}")
    type_oid, type_sql, category = row
    if operator in ("lt", "lte", "gt", "gte") and category == "S":
        raise KitError(f"filter {text!r}: ordering text depends on the collation; use eq, neq or in")
    texts = [v.strip().strip('"') for v in raw.strip("()").split(",")] if operator == "in" else [raw]
    cast = sql.SQL("select %s::text::{}::text").format(sql.SQL(type_sql))
    try:  # through the server, so a bad value fails now with PostgreSQL's message, not mid-stream
        canonical = [conn.execute(cast, [value]).fetchone()[0] for value in texts]
    except psycopg.DataError as error:
        raise KitError(f"filter {text!r}: {str(error).splitlines()[0]}") from None
    loader = (conn.adapters.get_loader(type_oid, Format.TEXT)
              or conn.adapters.get_loader(0, Format.TEXT))(type_oid, conn)
    values = tuple(loader.load(value.encode()) for value in canonical)
    return Filter(column, operator, values)
