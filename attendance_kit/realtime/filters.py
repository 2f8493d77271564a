"""A subscription's column filter, in Supabase's syntax: parsed, bound to its column, matched against rows.

`session_id=eq.<uuid>`; also `neq`, `lt`, `lte`, `gt`, `gte` and `in.(a,b)` (at most 100 values). Parsing checks
the syntax alone (`parse_filter`); binding (`bind_filter`) checks it against the database as Supabase Realtime
does when a subscriber joins: the column exists and the subscriber's role may select it, and the value is typed
as the column through the server, so a bad value fails at once with PostgreSQL's own message, never mid-stream.
A bound `Filter` then matches rows of Python values, as a SELECT returns them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg
from psycopg import sql
from psycopg.pq import Format

from ..errors import KitError

OPERATORS = ("eq", "neq", "lt", "lte", "gt", "gte", "in")
MAX_IN_VALUES = 100  # Supabase Realtime's limit for `in`

_FILTER = re.compile(r"^([A-Za-z_][A-Za-z0-9_$]*)=(" + "|".join(OPERATORS) + r")\.(.*)$", re.S)


class ParsedFilter(NamedTuple):
    """A filter's parts as written: column, operator and the value's text (for `in`, with its parentheses)."""

    column: str
    operator: str
    raw: str


@dataclass(frozen=True)
class Filter:
    """A column filter bound to its column, e.g. `session_id=eq.5e00...`, its values typed as the column."""

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


def parse_filter(text: str) -> ParsedFilter:
    """Column, operator and the value's text of a filter in Supabase's syntax."""
    match = _FILTER.match(text.strip())
    if not match:
        raise KitError(f"filter {text!r} is not column=operator.value (operators: {', '.join(OPERATORS)}), "
                       "e.g. session_id=eq.5e000000-0000-4000-8000-000000000001")
    parsed = ParsedFilter(*match.groups())
    if parsed.operator == "in" and not (parsed.raw.startswith("(") and parsed.raw.endswith(")")):
        raise KitError("`in` filter value must be wrapped by parentheses")  # Supabase's words
    return parsed


def bind_filter(conn: psycopg.Connection, schema: str, table: str, role: str, parsed: ParsedFilter) -> Filter:
    """The filter bound to the column: its value typed as the column (through the server, so a bad value fails
    now with PostgreSQL's message, not mid-stream), on a column the role may select (Supabase's rule)."""
    column, operator, raw = parsed
    row = conn.execute("""
        select a.atttypid, format_type(a.atttypid, a.atttypmod), t.typcategory,
               has_column_privilege(%s, a.attrelid, a.attnum, 'SELECT')
        from pg_attribute a join pg_type t on t.oid = a.atttypid
        where a.attrelid = %s::regclass and a.attname = %s and a.attnum > 0 and not a.attisdropped
    """, [role, sql.Identifier(schema, table).as_string(conn), column]).fetchone()
    if row is None or not row[3]:
        raise KitError(f"invalid column for filter {column}: not a column of {schema}.{table} that role {role} "
                       "may select")
    type_oid, type_sql, category, _ = row
    text = f"{column}={operator}.{raw}"
    if operator in ("lt", "lte", "gt", "gte") and category == "S":
        raise KitError(f"filter {text!r}: ordering text depends on the collation; use eq, neq or in")
    texts = [v.strip().strip('"') for v in raw[1:-1].split(",")] if operator == "in" else [raw]
    if len(texts) > MAX_IN_VALUES:
        raise KitError(f"too many values for `in` filter. Maximum {MAX_IN_VALUES}")  # Supabase's words
    cast = sql.SQL("select array(select v::{}::text from unnest(%s::text[]) with ordinality u (v, n) "
                   "order by n)").format(sql.SQL(type_sql))
    try:
        canonical = conn.execute(cast, [texts]).fetchone()[0]
    except psycopg.DataError as error:
        raise KitError(f"filter {text!r}: {str(error).splitlines()[0]}") from None
    loader = (conn.adapters.get_loader(type_oid, Format.TEXT)
              or conn.adapters.get_loader(0, Format.TEXT))(type_oid, conn)
    values = tuple(loader.load(value.encode()) for value in canonical)
    return Filter(column, operator, values)


def elixir_filters(parsed: ParsedFilter | None) -> str:
    """The filters as Supabase Realtime's log of a subscription shows them (in its refusal messages)."""
    if parsed is None:
        return "[]"
    column, operator, raw = parsed
    return f"[{{{json.dumps(column)}, {json.dumps(operator)}, {json.dumps(raw)}, false}}]"
