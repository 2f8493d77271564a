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
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import psycopg
from psycopg import sql

from ..errors import KitError
from .elixir import inspect, postgrex_message, raised

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

    def as_elixir(self) -> tuple[str, str, str, bool]:
        return (self.column, self.operator, self.value, self.negate)


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
    trimmed = text.strip()
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
    trimmed = segment.strip()
    if not trimmed:
        raise FilterSyntaxError("filter must not contain empty segments (check for extra commas)")
    column, equals, rest = trimmed.partition("=")
    if not equals:
        raise FilterSyntaxError(inspect([trimmed]))
    negate = rest.startswith("not.")
    operator, dot, value = rest.removeprefix("not.").partition(".")
    if not dot:
        raise FilterSyntaxError(inspect([rest.removeprefix("not.")]))
    if operator not in OPERATORS:
        raise FilterSyntaxError(inspect([operator, value]))
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
    for term in terms:
        if types[term.column].endswith("[]"):
            log.warning("realtime: the filter on %s's array column %s never matches here; on Supabase Realtime it "
                        "fails the change feed at every change of the table, losing that poll's changes "
                        "(docs/realtime.md, Filters and select)", relation, term.column)
    for column in select or ():
        if column not in selectable:
            raise FilterRefused(raised(f"invalid column for select {column}"))


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

Question = tuple[Term, str, str | None]  # a term, the column's type (as SQL), a change's value as text


class FilterCheck:
    """Which terms hold for which values, asked of PostgreSQL a statement per operator and type, remembered."""

    MAX_REMEMBERED = 100_000

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._known: dict[Question, bool] = {}
        self._types: dict[int, str] = {}

    def type_sql(self, oid: int) -> str:
        """A type's name to cast to, as Supabase writes it (`oid::regtype`)."""
        if oid not in self._types:
            self._types[oid] = self.conn.execute("select %s::regtype::text", [oid]).fetchone()[0]
        return self._types[oid]

    def holds(self, question: Question) -> bool:
        """Whether a term asked about before (`ask`) holds."""
        return self._known[question]

    def ask(self, questions: Iterable[Question]) -> None:
        """Answer these questions (those not answered before), by the database."""
        shapes: dict[tuple[str, str, bool, str], set[Question]] = defaultdict(set)
        for question in questions:
            if question not in self._known:
                term, type_sql, _ = question
                keyword = term.value if term.operator == "is" else ""
                shapes[term.operator, type_sql, term.negate, keyword].add(question)
        if len(self._known) > self.MAX_REMEMBERED:
            self._known.clear()
        for shape, asked in shapes.items():
            self._known.update(self._answer(shape, list(asked)))

    def _answer(self, shape: tuple[str, str, bool, str], asked: list[Question]) -> dict[Question, bool]:
        terms = sorted({term.value for term, _, _ in asked})
        values = sorted({value for _, _, value in asked}, key=lambda value: (value is None, value or ""))
        query = sql.SQL("select t.n, v.n from pg_catalog.unnest(%s::text[]) with ordinality as t (x, n), "
                        "pg_catalog.unnest(%s::text[]) with ordinality as v (y, n) where {}").format(
            sql.SQL(condition(*shape, "t.x", "v.y")))
        try:
            with self.conn.transaction():
                true = {(terms[t - 1], values[v - 1]) for t, v in self.conn.execute(query, [terms, values])}
        except psycopg.Error:
            if self.conn.broken:
                raise
            return {question: self._one(shape, question) for question in asked}
        return {question: (question[0].value, question[2]) in true for question in asked}

    def _one(self, shape: tuple[str, str, bool, str], question: Question) -> bool:
        """One question alone, after its statement failed: an error (a value Supabase cannot cast back) is not
        true."""
        query = sql.SQL("select true where {}").format(sql.SQL(condition(*shape, "%(term)s", "%(value)s")))
        try:
            with self.conn.transaction():
                arguments = {"term": question[0].value, "value": question[2]}
                return self.conn.execute(query, arguments).fetchone() is not None
        except psycopg.Error:
            if self.conn.broken:
                raise
            return False


def condition(operator: str, type_sql: str, negate: bool, keyword: str, term: str, value: str) -> str:
    """Supabase's `check_equality_op` as a condition on SQL text expressions `term` and `value`: the value as
    Supabase has it (through its JSON), both cast to the column's type."""
    column = f"(pg_catalog.to_jsonb(({value})::{type_sql}) #>> '{{}}')::{type_sql}"
    if type_sql == "bytea":
        column = f"({value})::bytea"
    if operator == "isdistinct":
        return f"{column} is {'not ' if negate else ''}distinct from ({term})::{type_sql}"
    if operator == "is":
        return f"{column} is {'not ' if negate else ''}{keyword}"
    right = f"{type_sql}[]" if operator == "in" else type_sql
    compared = f"{column} {_SYMBOLS[operator]} (({term})::{right})"
    return f"not ({compared})" if negate else compared
