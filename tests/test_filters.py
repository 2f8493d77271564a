"""The filter parser (realtime/filters.py): Supabase's syntax, bound to a column on a real server, matched on rows.

Matching is checked against PostgreSQL itself: for each filter, the rows `Filter.matches` accepts are the rows
the same comparison selects in SQL.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from attendance_kit import KitError
from attendance_kit.demo import ENGINES_LECTURE
from attendance_kit.realtime.filters import (
    MAX_IN_VALUES,
    Filter,
    ParsedFilter,
    bind_filter,
    elixir_filters,
    parse_filter,
)

FIRST, SECOND, THIRD = (uuid.UUID(f"f0000000-0000-4000-8000-00000000000{n}") for n in (1, 2, 3))


@pytest.fixture
def probe(conn: psycopg.Connection) -> psycopg.Connection:
    """A table of every type the tests filter on, three rows and one of NULLs; `authenticated` may select all
    its columns but `secret`."""
    conn.execute("""
        create table public.filter_probe (
            id uuid primary key, label text, at timestamptz, present boolean, amount numeric(6, 2),
            seats int, secret text);
        revoke all on public.filter_probe from anon, authenticated;  -- Supabase's default privileges grant them
        grant select (id, label, at, present, amount, seats) on public.filter_probe to authenticated;
    """)
    conn.execute("""
        insert into public.filter_probe values
            (%s, 'alpha', '2026-11-25 10:00:00+00', true, 1.50, 10, 's'),
            (%s, 'beta, gamma', '2026-11-25 11:00:00+00', false, 2.25, 20, 's'),
            (%s, 'delta', '2026-11-26 09:30:00+00', true, -3, 30, 's'),
            ('f0000000-0000-4000-8000-0000000000ff', null, null, null, null, null, null);
    """, [FIRST, SECOND, THIRD])
    return conn


def bound(conn: psycopg.Connection, text: str, role: str = "authenticated") -> Filter:
    return bind_filter(conn, "public", "filter_probe", role, parse_filter(text))


def python_matches(conn: psycopg.Connection, text: str) -> set[uuid.UUID]:
    """The ids of the rows the bound filter matches, the rows as a SELECT returns them."""
    cursor = conn.execute("select id, label, at, present, amount, seats from public.filter_probe")
    names = [column.name for column in cursor.description]
    rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    condition = bound(conn, text)
    return {row["id"] for row in rows if condition.matches(row)}


SQL_OPERATORS = {"eq": "=", "neq": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


def sql_matches(conn: psycopg.Connection, text: str) -> set[uuid.UUID]:
    """The ids of the rows PostgreSQL selects with the same comparison, the value cast to the column's type."""
    column, operator, raw = parse_filter(text)
    column_type = conn.execute("select format_type(atttypid, atttypmod) from pg_attribute "
                               "where attrelid = 'public.filter_probe'::regclass and attname = %s",
                               [column]).fetchone()[0]
    if operator == "in":
        condition, value = f"= any (%s::text[]::{column_type}[])", [v.strip().strip('"') for v in raw[1:-1].split(",")]
    else:
        condition, value = f"{SQL_OPERATORS[operator]} %s::{column_type}", raw
    return {row[0] for row in conn.execute(f"select id from public.filter_probe where {column} {condition}",
                                           [value]).fetchall()}


@pytest.mark.parametrize("text", [
    f"id=eq.{FIRST}", f"id=neq.{FIRST}", f"id=in.({FIRST},{THIRD})", f'id=in.("{SECOND}", "{THIRD}")',
    "label=eq.alpha", "label=neq.alpha", "label=in.(alpha,delta)",
    "at=eq.2026-11-25T11:00:00+00:00", "at=eq.2026-11-25 12:00:00+01", "at=lt.2026-11-25T11:00:00Z",
    "at=lte.2026-11-25T11:00:00Z", "at=gt.2026-11-25T11:00:00Z", "at=gte.2026-11-25T11:00:00Z",
    "at=in.(2026-11-25T10:00:00Z,2026-11-26 10:30:00+01)",
    "present=eq.true", "present=eq.t", "present=neq.yes", "present=in.(false)",
    "amount=eq.1.5", "amount=neq.1.50", "amount=lt.2.25", "amount=lte.2.25", "amount=gt.-3", "amount=gte.-3.00",
    "amount=in.(1.5,-3)", "seats=gt.10", "seats=lte.20", "seats=in.(10, 30)",
])
def test_a_bound_filter_matches_the_rows_postgresql_selects(probe: psycopg.Connection, text: str) -> None:
    matched = python_matches(probe, text)
    assert matched == sql_matches(probe, text)
    if not text.startswith("id="):  # the row of NULLs has an id
        assert uuid.UUID("f0000000-0000-4000-8000-0000000000ff") not in matched  # NULL matches no comparison


def test_values_are_typed_as_their_column(probe: psycopg.Connection) -> None:
    assert bound(probe, f"id=eq.{FIRST}").values == (FIRST,)
    assert bound(probe, "at=eq.2026-11-25 12:00:00+01").values == (datetime(2026, 11, 25, 11, tzinfo=UTC),)
    assert bound(probe, "present=eq.yes").values == (True,)
    assert bound(probe, "amount=eq.1.5").values == (Decimal("1.50"),)  # numeric(6, 2): the column's scale
    assert bound(probe, "seats=in.( 10 ,\"20\")").values == (10, 20)
    assert bound(probe, "label=in.(\"beta\", gamma)") == Filter("label", "in", ("beta", "gamma"))


def test_a_null_or_missing_value_matches_nothing_not_even_neq() -> None:
    for operator in ("eq", "neq", "lt", "lte", "gt", "gte", "in"):
        condition = Filter("seats", operator, (10,))
        assert not condition.matches({"seats": None}) and not condition.matches({})
    assert Filter("seats", "neq", (10,)).matches({"seats": 11})


def test_parse_takes_column_operator_and_raw_value() -> None:
    assert parse_filter(f"  session_id=eq.{ENGINES_LECTURE} ") == ParsedFilter("session_id", "eq", ENGINES_LECTURE)
    assert parse_filter("title=eq.a=b.c") == ParsedFilter("title", "eq", "a=b.c")  # the value is everything after
    assert parse_filter('status=in.("live", ended)') == ParsedFilter("status", "in", '("live", ended)')


@pytest.mark.parametrize("text", ["session_id=like.x", "session_id=eq", "=eq.1", "session_id", "1column=eq.1",
                                  "session_id = eq.1", ""])
def test_bad_syntax_says_the_form_and_the_operators(text: str) -> None:
    with pytest.raises(KitError, match=r"is not column=operator.value \(operators: eq, neq, lt, lte, gt, gte, "
                                       r"in\), e.g. session_id=eq.5e"):
        parse_filter(text)


def test_in_needs_parentheses() -> None:
    for text in ("status=in.live,ended", "status=in.(live,ended", "status=in.live)"):
        with pytest.raises(KitError, match=r"^`in` filter value must be wrapped by parentheses$"):
            parse_filter(text)


def test_in_takes_at_most_100_values(probe: psycopg.Connection) -> None:
    hundred = ",".join(str(n) for n in range(MAX_IN_VALUES))
    assert len(bound(probe, f"seats=in.({hundred})").values) == 100
    with pytest.raises(KitError, match=r"^too many values for `in` filter. Maximum 100$"):
        bound(probe, f"seats=in.({hundred},100)")


@pytest.mark.parametrize("operator", ["lt", "lte", "gt", "gte"])
def test_ordering_a_text_column_is_refused(probe: psycopg.Connection, operator: str) -> None:
    with pytest.raises(KitError, match=rf"filter 'label={operator}.m': ordering text depends on the collation; "
                                       "use eq, neq or in"):
        bound(probe, f"label={operator}.m")


def test_a_column_the_role_may_not_select_is_refused_as_one_that_does_not_exist(probe: psycopg.Connection) -> None:
    assert bound(probe, "secret=eq.s", role="service_role").values == ("s",)
    for column in ("secret", "nope"):
        with pytest.raises(KitError, match=rf"^invalid column for filter {column}: not a column of "
                                           "public.filter_probe that role authenticated may select$"):
            bound(probe, f"{column}=eq.s")
    with pytest.raises(KitError, match="that role anon may select"):
        bind_filter(probe, "public", "attendance_records", "anon", parse_filter(f"session_id=eq.{ENGINES_LECTURE}"))


@pytest.mark.parametrize(("text", "type_name"), [
    ("id=eq.not-a-uuid", "uuid"), ("at=gt.yesterday-ish", "timestamp with time zone"),
    ("present=eq.maybe", "boolean"), ("amount=lt.1,5", "numeric"), ("seats=in.(1,2.5)", "integer"),
])
def test_a_value_that_does_not_cast_fails_at_binding_with_postgresql_s_message(
        probe: psycopg.Connection, text: str, type_name: str) -> None:
    with pytest.raises(KitError, match=rf"^filter '{re.escape(text)}': invalid input syntax for type {type_name}"):
        bound(probe, text)


def test_a_numeric_value_beyond_the_column_s_precision_fails_at_binding(probe: psycopg.Connection) -> None:
    with pytest.raises(KitError, match=r"^filter 'amount=eq.123456': numeric field overflow"):
        bound(probe, "amount=eq.123456")


def test_elixir_filters_as_supabase_logs_them() -> None:
    assert elixir_filters(None) == "[]"
    assert elixir_filters(parse_filter('status=in.("live",x)')) == '[{"status", "in", "(\\"live\\",x)", false}]'
