"""A subscription's column filters, in Supabase's syntax: parsed, checked and evaluated as Supabase Realtime does.

Syntax (Supabase Realtime's, what supabase-js's `postgresChangesFilter` writes): `column=[not.]operator.value`,
several joined by commas meaning AND, e.g. `session_id=eq.<uuid>,status=neq.absent`. Operators: `eq neq lt lte
gt gte in like ilike is match imatch isdistinct`; `not.` negates one (`is` becomes IS NOT, `isdistinct` IS NOT
DISTINCT FROM). `in.(a,"b,c")` is a PostgreSQL array's elements (at most 100); `is.` takes null, true, false or
unknown; a value may be double-quoted (`\\` escapes inside), so a comma inside quotes or parentheses does not
split. `parse_filter` parses as Supabase's parser does and refuses with its words (`FilterSyntaxError`).

`check_filter` does what Supabase's `realtime.subscription_check_filters` does when a subscription is made, in
its order and with its messages (`FilterRefused`): a column the role may select, a value the column's type takes,
`like` only where the type has `~~`, `match` only where it has `~`, a regex that compiles, `is true` only on
booleans, and `select`'s columns.

`FilterCheck` evaluates terms on a poll's changes by PostgreSQL, with Supabase's expression
(`realtime.check_equality_op`): both sides cast to the column's type and compared with the type's own operator,
so text compares under its collation, `like` escapes and regexes are PostgreSQL's. A filter holds when every term
is true: NULL is not (a NULL value fails every operator but `is` and `isdistinct`, negated or not), nor is a column
the change does not carry (a DELETE's non-key column under the default replica identity, an unchanged TOASTed
value). The value compared is the change's value as Supabase has it: through its JSON (`to_jsonb(...) #>> '{}'`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

from ..errors import KitError
from .elixir import inspect, postgrex_message, raised, trim

OPERATORS = ("eq", "neq", "lt", "lte", "gt", "gte", "in", "like", "ilike", "is", "match", "imatch", "isdistinct")
MAX_IN_VALUES = 100  # Supabase Realtime's limit for `in`
IS_VALUES = ("null", "true", "false", "unknown")

log = logging.getLogger(__package__)

_SYMBOLS = {"eq": "=", "neq": "!=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "in": "= any",
            "like": "like", "ilike": "ilike", "match": "~", "imatch": "~*"}


class Term(NamedTuple):
    """One comma-separated part of a filter, as Supabase stores it: the value unquoted, `in`'s as an array
    literal (`{a,b}`)."""

    column: str
    operator: str
    value: str
    negate: bool


class FilterSyntaxError(KitError):
    """A filter Supabase's parser refuses; `reason` in its words."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Error parsing `filter` params: {reason}")
        self.reason = reason


class FilterRefused(KitError):
    """A filter (or `select`) the database refuses, in Postgrex's words of Supabase's trigger's error."""


# --- parsing ----------------------------------------------------------------------------------------------------

def parse_filter(text: str) -> tuple[Term, ...]:
    """The terms of a filter in Supabase's syntax (none for an empty or blank one)."""
    trimmed = trim(text)
    return tuple(map(_term, _split_top_level(trimmed))) if trimmed else ()


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside parentheses and outside a double quote opened right after `.`, `(` or `,`."""
    segments, current = [], ""
    depth, quoted, previous, i = 0, False, "", 0
    while i < len(text):
        char = text[i]
        if quoted and char == "\\" and i + 1 < len(text):
            current, previous, i = current + text[i:i + 2], text[i + 1], i + 2
            continue
        if quoted:
            quoted = char != '"'
        elif char == '"' and previous in (".", "(", ","):
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            segments.append(current)
            current, previous, i = "", "", i + 1
            continue
        current, previous, i = current + char, char, i + 1
    return [*segments, current]


def _term(segment: str) -> Term:
    trimmed = trim(segment)
    if not trimmed:
        raise FilterSyntaxError("filter must not contain empty segments (check for extra commas)")
    column, equals, rest = trimmed.partition("=")
    if not equals:
        raise FilterSyntaxError(inspect([trimmed], pretty=False))
    negate = rest.startswith("not.")
    operator, dot, value = rest.removeprefix("not.").partition(".")
    if not dot:
        raise FilterSyntaxError(inspect([rest.removeprefix("not.")], pretty=False))
    if operator not in OPERATORS:
        raise FilterSyntaxError(inspect([operator, value], pretty=False))
    if operator == "in":
        if not (len(value) >= 2 and value.startswith("(") and value.endswith(")")):
            raise FilterSyntaxError("`in` filter value must be wrapped by parentheses")
        return Term(column, operator, "{" + value[1:-1] + "}", negate)
    return Term(column, operator, _unquoted(value), negate)


def _unquoted(value: str) -> str:
    """A value wrapped in double quotes without them (`\\` escaping the next character); else as written."""
    if not value.startswith('"'):
        return value
    out, i = "", 1
    while i < len(value):
        char = value[i]
        if char == '"':
            return out if i == len(value) - 1 else value  # text after the closing quote: taken as written
        if char == "\\" and i + 1 < len(value):
            out, i = out + value[i + 1], i + 2
            continue
        out, i = out + char, i + 1
    return value  # never closed


# --- checking, when a subscription is made ----------------------------------------------------------------------

def check_filter(conn: psycopg.Connection, relation: str, role: str, terms: Sequence[Term],
                 select: Sequence[str] | None = None) -> None:
    """Supabase's checks of a subscription's filters and `select` on `relation` (a quoted, qualified name) for
    `role`, in its order; `FilterRefused` with what Supabase would answer."""
    rows = conn.execute("""
        select a.attname, a.atttypid::regtype::text,
               pg_catalog.has_column_privilege(%s, a.attrelid, a.attnum, 'SELECT')
        from pg_catalog.pg_attribute a where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped
        order by a.attnum""", [role, relation]).fetchall()
    selectable = [name for name, _, may in rows if may]
    types = {name: type_sql for name, type_sql, _ in rows}
    for term in terms:
        if term.column not in selectable:
            raise FilterRefused(raised(f"invalid column for filter {term.column}"))
        _check_term(conn, term, types[term.column])
    for column in select or ():
        if column not in selectable:
            raise FilterRefused(raised(f"invalid column for select {column}"))
    for term in terms:  # accepted, as Supabase accepts them; but some it cannot evaluate
        if _fails_on_supabase(conn, term, types[term.column]):
            log.warning("realtime: the filter %s=%s.%s on %s never matches here, as PostgreSQL cannot evaluate it; "
                        "on Supabase Realtime it fails the change feed at every change of the table, losing that "
                        "poll's changes (docs/realtime.md, Filters and select)", term.column, term.operator,
                        term.value, relation)


def _fails_on_supabase(conn: psycopg.Connection, term: Term, type_sql: str) -> bool:
    """Whether evaluating the term raises, as on an array column (its value comes back from JSON as no array
    literal), a `json` one (no `=`), or a `like` pattern ending in `\\`: tried on the filter's own value."""
    if type_sql.endswith("[]"):
        return True
    if term.operator in ("in", "is"):  # their values are no value of the column
        return False
    query = sql.SQL("select {}").format(sql.SQL(condition(Shape.of(term, type_sql), "%(term)s", "%(term)s")))
    return _attempt(conn, query, {"term": term.value}) is None


def _attempt(conn: psycopg.Connection, query: sql.Composed, arguments: Any) -> list[tuple[Any, ...]] | None:
    """The statement's rows, or None when PostgreSQL refused it (a lost connection raises)."""
    try:
        with conn.transaction():
            return conn.execute(query, arguments).fetchall()
    except psycopg.Error:
        if conn.broken:
            raise
        return None


def _check_term(conn: psycopg.Connection, term: Term, type_sql: str) -> None:
    operator, value = term.operator, term.value
    try:
        if operator == "in":
            count = conn.execute(sql.SQL("select coalesce(pg_catalog.jsonb_array_length(pg_catalog.to_jsonb("
                                         "%s::{}[])), 0)").format(sql.SQL(type_sql)), [value]).fetchone()[0]
            if count > MAX_IN_VALUES:
                raise FilterRefused(raised(f"too many values for `in` filter. Maximum {MAX_IN_VALUES}"))
        elif operator == "is":
            if value not in IS_VALUES:
                raise FilterRefused(raised("invalid value for is filter: must be null, true, false, or unknown"))
            if value != "null" and type_sql != "boolean":
                raise FilterRefused(raised(f"is {value} filter requires a boolean column, got {type_sql}"))
        elif operator in ("like", "ilike", "match", "imatch"):
            _check_pattern(conn, term, type_sql)
        elif type_sql != "bytea":  # Supabase's cast takes any text as bytea
            conn.execute(sql.SQL("select pg_catalog.to_jsonb(%s::{})").format(sql.SQL(type_sql)), [value])
    except psycopg.Error as error:
        if conn.broken:
            raise
        raise FilterRefused(postgrex_message(error)) from None


def _check_pattern(conn: psycopg.Connection, term: Term, type_sql: str) -> None:
    """`like` needs the type's `~~`; `match` its `~` (or `~*`) and a regex PostgreSQL compiles."""
    if term.operator in ("like", "ilike"):
        has_operator = ("select exists (select from pg_catalog.pg_operator where oprname = '~~' "
                        "and oprleft = %s::regtype)")
        arguments = [type_sql]
    else:
        has_operator = """select exists (select from pg_catalog.pg_operator where oprname = %s
                          and oprleft = %s::regtype and oprright = %s::regtype and oprresult = 'boolean'::regtype)"""
        arguments = ["~*" if term.operator == "imatch" else "~", type_sql, type_sql]
    if not conn.execute(has_operator, arguments).fetchone()[0]:
        raise FilterRefused(raised(f"operator {term.operator} requires a text-compatible column type, got {type_sql}"))
    if term.operator in ("match", "imatch"):
        try:
            with conn.transaction():
                conn.execute("select '' ~ %s", [term.value])
        except psycopg.DataError as error:
            raise FilterRefused(raised(f"invalid regular expression for {term.operator} filter: "
                                       f"{error.diag.message_primary}")) from None


# --- evaluation, per poll ---------------------------------------------------------------------------------------

NON_FINITE = ("NaN", "Infinity", "-Infinity")


class Shape(NamedTuple):
    """What one statement evaluates: an operator (negated or not) on a type; `is` with its keyword."""

    operator: str
    type_sql: str
    negate: bool
    keyword: str  # `is`'s value; else ""

    @classmethod
    def of(cls, term: Term, type_sql: str) -> Shape:
        return cls(term.operator, type_sql, term.negate, term.value if term.operator == "is" else "")


Holding = dict[Shape, set[tuple[str, str | None]]]  # per shape, the (filter value, change value) pairs that hold


class FilterCheck:
    """Which filter values hold for which change values, asked of PostgreSQL: per shape, one statement over the
    distinct values of both, returning the pairs that hold; a pair it does not return does not hold."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._types: dict[int, str] = {}

    def type_sql(self, oid: int) -> str:
        """A type's name to cast to, as Supabase writes it (`oid::regtype`)."""
        if oid not in self._types:
            self._types[oid] = self.conn.execute("select %s::regtype::text", [oid]).fetchone()[0]
        return self._types[oid]

    def holding(self, asked: dict[Shape, tuple[set[str], set[str | None]]]) -> Holding:
        """For each shape, its filter values and change values: the pairs that hold."""
        return {shape: self._pairs(shape, sorted(terms), _sorted(values)) for shape, (terms, values) in asked.items()}

    def _pairs(self, shape: Shape, terms: list[str], values: list[str | None]) -> set[tuple[str, str | None]]:
        """One statement for them all; if it fails (a value or a pattern PostgreSQL refuses), the filter values in
        halves until the failing one is alone, which is asked one change value at a time: an error is not a match,
        and is only that pair's."""
        pairs = self._holding_pairs(shape, terms, values)
        if pairs is not None:
            return pairs
        if len(terms) > 1:
            half = len(terms) // 2
            return self._pairs(shape, terms[:half], values) | self._pairs(shape, terms[half:], values)
        return set().union(*(self._holding_pairs(shape, terms, [value]) or set() for value in values))

    def _holding_pairs(self, shape: Shape, terms: list[str], values: list[str | None]
                       ) -> set[tuple[str, str | None]] | None:
        """The pairs that hold, or None when the statement failed (a lost connection raises)."""
        query = sql.SQL("select t.x, v.y from pg_catalog.unnest(%s::text[]) as t (x), "
                        "pg_catalog.unnest(%s::text[]) as v (y) where {}").format(
            sql.SQL(condition(shape, "t.x", "v.y")))
        rows = _attempt(self.conn, query, [terms, values])
        return None if rows is None else set(rows)


def wal2json_text(type_sql: str, text: str | None) -> str | None:
    """A change's value as wal2json writes it, which is what Supabase compares: a NaN or infinite number is null,
    a bytea its hex digits without `\\x`."""
    if text is not None and type_sql in ("real", "double precision", "numeric") and text in NON_FINITE:
        return None
    if text is not None and type_sql == "bytea":
        return text.removeprefix("\\x")
    return text


def _sorted(values: set[str | None]) -> list[str | None]:
    return sorted(values, key=lambda value: (value is None, value or ""))


def condition(shape: Shape, term: str, value: str) -> str:
    """Supabase's `check_equality_op` as a condition on SQL text expressions `term` and `value`: the value as
    Supabase has it (through its JSON), both cast to the column's type."""
    operator, type_sql, negate, keyword = shape
    column = f"(pg_catalog.to_jsonb(({value})::{type_sql}) #>> '{{}}')::{type_sql}"
    if type_sql == "bytea":  # Supabase's cast keeps wal2json's text of a bytea
        column = f"({value})::bytea"
    if operator == "isdistinct":
        return f"{column} is {'not ' if negate else ''}distinct from ({term})::{type_sql}"
    if operator == "is":  # its value goes into the SQL: only Supabase's four words
        return f"{column} is {'not ' if negate else ''}{keyword}" if keyword in IS_VALUES else "false"
    right = f"{type_sql}[]" if operator == "in" else type_sql
    compared = f"{column} {_SYMBOLS[operator]} (({term})::{right})"
    return f"not ({compared})" if negate else compared
