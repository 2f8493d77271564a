"""Filters (realtime/filters.py) as Supabase Realtime takes them: its parser's results and refusals, its trigger's
checks and words, and evaluation by PostgreSQL with Supabase's semantics, through a real `Realtime` feed.

What Supabase does was read in supabase/realtime (`Subscriptions.parse_subscription_params` and its doctests,
`realtime.subscription_check_filters`, `realtime.check_equality_op`, `realtime.is_visible_through_filters`) and
run: tests/data/supabase_filters.json holds what Supabase's own parser and SQL did with 204 subscriptions and 15
changes, replayed through the kit at the end of this file (docs/realtime.md, Filters and `select`).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from attendance_kit import KitError, connect, migrate
from attendance_kit.realtime import Realtime
from attendance_kit.realtime.elixir import inspect
from attendance_kit.realtime.filters import FilterRefused, FilterSyntaxError, Term, check_filter, parse_filter
from attendance_kit.realtime.subscriptions import ChannelRefused
from attendance_kit.realtime.wire import event_json

SERVICE = {"role": "service_role"}


# --- parsing: Supabase's parser's results -----------------------------------------------------------------------

@pytest.mark.parametrize(("text", "terms"), [
    ("subject=eq.hey", [("subject", "eq", "hey", False)]),
    ("subject=in.(hidee,ho)", [("subject", "in", "{hidee,ho}", False)]),
    ("subject=not.like.hey%", [("subject", "like", "hey%", True)]),
    ("id=gt.0,id=lt.100", [("id", "gt", "0", False), ("id", "lt", "100", False)]),
    ("", []), ("   ", []),
    # A comma inside parentheses or inside a quoted value does not split; quotes and escapes come off.
    ('label=in.(a,"b,c"),n=not.is.null', [("label", "in", '{a,"b,c"}', False), ("n", "is", "null", True)]),
    ('label=eq."x,y",n=eq.1', [("label", "eq", "x,y", False), ("n", "eq", "1", False)]),
    (r'label=eq."say \"hi\", \\o/"', [("label", "eq", 'say "hi", \\o/', False)]),
    ('label=eq."unclosed', [("label", "eq", '"unclosed', False)]),
    ('label=eq.a"b,n=eq.1', [("label", "eq", 'a"b', False), ("n", "eq", "1", False)]),  # a quote mid-value
    ("title=eq.a=b.c", [("title", "eq", "a=b.c", False)]),  # the value is everything after the operator's dot
])
def test_parse_gives_supabase_s_terms(text: str, terms: list[tuple[str, str, str, bool]]) -> None:
    assert parse_filter(text) == tuple(Term(*term) for term in terms)


@pytest.mark.parametrize(("text", "reason"), [
    ("subject=foo.hey", '["foo", "hey"]'),
    ("undefined", '["undefined"]'),
    ("n=eq", '["eq"]'),
    ("n=not.eq", '["eq"]'),
    ("  n = eq.1 ", '[" eq", "1"]'),  # no trimming inside a term: " eq" is no operator
    ("n=in.5", "`in` filter value must be wrapped by parentheses"),
    ("n=in.(5", "`in` filter value must be wrapped by parentheses"),
    ("n=eq.5,,label=eq.a", "filter must not contain empty segments (check for extra commas)"),
    ("n=eq.5,", "filter must not contain empty segments (check for extra commas)"),
    ('n=foo."#{x}"', '["foo", "\\"\\#{x}\\""]'),  # Elixir's inspect escapes quotes and #{
])
def test_parse_refuses_with_supabase_s_reason(text: str, reason: str) -> None:
    with pytest.raises(FilterSyntaxError) as refused:
        parse_filter(text)
    assert refused.value.reason == reason
    assert str(refused.value) == f"Error parsing `filter` params: {reason}"


def test_params_are_quoted_as_elixir_quotes_them() -> None:
    assert inspect([("n", "in", '{a,"b"}', False)]) == '[{"n", "in", "{a,\\"b\\"}", false}]'
    assert inspect(None) == "nil" and inspect(["label"]) == '["label"]'
    many = [(f"column_{i}", "eq", "1", False) for i in range(3)]  # past 80 characters: an element a line
    assert inspect(many) == '[\n  {"column_0", "eq", "1", false},\n  {"column_1", "eq", "1", false},\n' \
                            '  {"column_2", "eq", "1", false}\n]'
    long = "{" + ",".join(map(str, range(101))) + "}"  # a tuple too wide: as many elements a line as fit
    assert inspect([("n", "in", long, False)]) == f'[\n  {{"n", "in",\n   "{long}",\n   false}}\n]'


# --- checking, when a subscription is made: Supabase's trigger ---------------------------------------------------

@pytest.fixture
def probe(conn: psycopg.Connection) -> psycopg.Connection:
    """A published table of many types; `authenticated` may select every column but `secret`."""
    conn.execute("""
        create table public.filter_probe (
            id int primary key, label text, n int, amount numeric(6, 2), at timestamptz, flag boolean, uid uuid,
            tags text[], code varchar(10), secret text);
        revoke all on public.filter_probe from anon, authenticated;
        grant select (id, label, n, amount, at, flag, uid, tags, code) on public.filter_probe to authenticated;
        grant select on public.filter_probe to service_role;
        alter publication live_attendance_pub add table public.filter_probe;
    """)
    return conn


def refusal(conn: psycopg.Connection, text: str, select: list[str] | None = None, role: str = "authenticated") -> str:
    with pytest.raises(FilterRefused) as refused:
        check_filter(conn, "public.filter_probe", role, parse_filter(text), select)
    return str(refused.value)


@pytest.mark.parametrize(("text", "message"), [
    ("nope=eq.1", "ERROR P0001 (raise_exception) invalid column for filter nope"),
    ("secret=eq.s", "ERROR P0001 (raise_exception) invalid column for filter secret"),  # not the role's
    ("n=eq.x", 'ERROR 22P02 (invalid_text_representation) invalid input syntax for type integer: "x"'),
    ("uid=in.(1,2)", 'ERROR 22P02 (invalid_text_representation) invalid input syntax for type uuid: "1"'),
    ("n=is.maybe", "ERROR P0001 (raise_exception) invalid value for is filter: must be null, true, false, or unknown"),
    ("n=is.true", "ERROR P0001 (raise_exception) is true filter requires a boolean column, got integer"),
    ("n=like.1%", "ERROR P0001 (raise_exception) operator like requires a text-compatible column type, got integer"),
    ("code=ilike.a%",
     "ERROR P0001 (raise_exception) operator ilike requires a text-compatible column type, got character varying"),
    ("n=match.1", "ERROR P0001 (raise_exception) operator match requires a text-compatible column type, got integer"),
    ("label=imatch.(", "ERROR P0001 (raise_exception) invalid regular expression for imatch filter: "
                       "invalid regular expression: parentheses () not balanced"),
    ("n=in.(" + ",".join(map(str, range(101))) + ")",
     "ERROR P0001 (raise_exception) too many values for `in` filter. Maximum 100"),
    ("n=eq.1,nope=eq.1", "ERROR P0001 (raise_exception) invalid column for filter nope"),  # each term, in order
])
def test_the_database_refuses_as_supabase_s_trigger_does(probe: psycopg.Connection, text: str, message: str) -> None:
    assert refusal(probe, text) == message


def test_what_the_trigger_accepts(probe: psycopg.Connection) -> None:
    for text in ("n=in.(" + ",".join(map(str, range(100))) + ")", "secret=eq.s", "flag=is.unknown",
                 "label=like.a%,label=not.match.^b", "n=is.null", "amount=eq.123456",  # numeric, not numeric(6,2)
                 'tags=eq."{a,b}"', "at=gt.2026-11-25 10:00+01", "label=isdistinct.null"):
        check_filter(probe, "public.filter_probe", "service_role", parse_filter(text), ["label"])
    assert refusal(probe, "", ["label", "secret"]) == "ERROR P0001 (raise_exception) invalid column for select secret"
    # `isdistinct`'s value is cast as the column's type: `null` is no integer.
    assert refusal(probe, "n=isdistinct.null") == ('ERROR 22P02 (invalid_text_representation) invalid input '
                                                   'syntax for type integer: "null"')


# --- evaluation: which changes reach which filter ----------------------------------------------------------------

ROWS = """insert into public.filter_probe values
    (1, 'alpha', 5, 1.50, '2026-11-25 10:00:00+00', true, 'f0000000-0000-4000-8000-000000000001', '{a,b}', 'abc', 's'),
    (2, 'Beta, gamma', 20, 2.25, '2026-11-25 11:00:00+00', false, 'f0000000-0000-4000-8000-000000000002', '{c}', 'B',
     's'),
    (3, 'a_b%c', -3, -3, '2026-11-26 09:30:00+00', true, null, '{}', 'a_b', 's'),
    (4, null, null, null, null, null, null, null, null, null)"""


def delivered_ids(probe: psycopg.Connection, db_url: str, filters: list[str],
                  select: list[str] | None = None) -> dict[str, list[int]]:
    """Which rows of ROWS reach a channel subscribed with each filter (service_role: no RLS in the way)."""
    with Realtime(db_url) as realtime:
        subscribers = {text: realtime.subscribe_channel(SERVICE, [{"event": "INSERT", "schema": "public",
                                                                   "table": "filter_probe", "filter": text}])
                       for text in filters}
        probe.execute(ROWS)
        events = realtime.poll()
    return {text: [event["record"]["id"] for event in events.get(subscriber, [])]
            for text, subscriber in subscribers.items()}


def selected_ids(conn: psycopg.Connection, condition: str) -> list[int]:
    return [row[0] for row in conn.execute(f"select id from public.filter_probe where {condition} order by id")]


COMPARED = {  # a filter, and the same condition written in SQL by hand
    "label=eq.alpha": "label = 'alpha'", "label=neq.alpha": "label <> 'alpha'",
    "label=lt.b": "label < 'b'", "label=gte.Beta": "label >= 'Beta'",
    "label=like.a%": "label like 'a%'", "label=like.a\\_b\\%c": "label like 'a\\_b\\%c'",
    "label=ilike.BETA%": "label ilike 'BETA%'", "label=not.like.a%": "not (label like 'a%')",
    "label=match.^[ab]": "label ~ '^[ab]'", "label=imatch.^B": "label ~* '^B'",
    'label=in.(alpha,"Beta, gamma")': "label in ('alpha', 'Beta, gamma')",
    "label=not.in.(alpha)": "not (label in ('alpha'))",
    "n=gt.1,n=lt.10": "n > 1 and n < 10", "n=not.gt.0": "not (n > 0)", "n=lte.-3": "n <= -3",
    "amount=eq.1.5": "amount = 1.5", "amount=in.(2.250,-3)": "amount in (2.25, -3)",
    "at=eq.2026-11-25 12:00:00+01": "at = '2026-11-25 11:00:00+00'",
    "at=lt.2026-11-25T11:00:00Z": "at < '2026-11-25 11:00Z'",
    "flag=eq.t": "flag", "flag=neq.true": "flag <> true", "flag=is.false": "flag is false",
    "flag=not.is.true": "flag is not true", "flag=is.unknown": "flag is unknown",
    "uid=eq.F0000000-0000-4000-8000-000000000002": "uid = 'f0000000-0000-4000-8000-000000000002'",
    "uid=is.null": "uid is null", "uid=not.is.null": "uid is not null",
    "n=isdistinct.5": "n is distinct from 5", "n=not.isdistinct.5": "n is not distinct from 5",
    "code=eq.abc": "code = 'abc'", "code=lt.b": "code < 'b'",
    "label=eq.Alpha": "false",
}


def test_a_filter_reaches_the_rows_postgresql_selects_with_the_same_condition(
        probe: psycopg.Connection, db_url: str) -> None:
    reached = delivered_ids(probe, db_url, list(COMPARED))
    assert {text: selected_ids(probe, condition) for text, condition in COMPARED.items()} == reached
    # NULL reaches no comparison, negated or not; only `is` and `isdistinct` reach it.
    assert 4 not in reached["label=neq.alpha"] + reached["label=not.like.a%"] + reached["n=not.gt.0"]
    assert 4 in reached["uid=is.null"] and 4 in reached["n=isdistinct.5"] and 4 in reached["flag=is.unknown"]


def test_an_in_of_a_hundred_values_and_quoted_elements(probe: psycopg.Connection, db_url: str) -> None:
    hundred = "n=in.(" + ",".join(map(str, range(-50, 50))) + ")"
    quoted = 'label=in.("alpha", "Beta, gamma",NULL)'  # an array literal: NULL unquoted is NULL, no match
    reached = delivered_ids(probe, db_url, [hundred, quoted])
    assert reached == {hundred: [1, 2, 3], quoted: [1, 2]}


def test_an_array_column_s_filter_never_holds_as_its_value_comes_back_from_json(
        probe: psycopg.Connection, db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Supabase compares a change's value after a trip through JSON; an array's comes back as `["a", "b"]`, which
    is no array literal (on Supabase the error fails its change feed: the kit says so, once per subscription)."""
    assert delivered_ids(probe, db_url, ['tags=eq."{a,b}"', "tags=is.null", "n=eq.5"]) == {
        'tags=eq."{a,b}"': [], "tags=is.null": [4], "n=eq.5": [1]}
    warnings = [r.getMessage() for r in caplog.records if "never matches here" in r.getMessage()]
    assert len(warnings) == 2 and "on Supabase Realtime it fails the change feed" in warnings[0]


def test_a_delete_s_filter_holds_only_on_what_the_replica_identity_logged(
        probe: psycopg.Connection, db_url: str) -> None:
    probe.execute(ROWS)
    with Realtime(db_url) as realtime:
        on_key, on_label, null_label = (
            realtime.subscribe_channel(SERVICE, [{"event": "DELETE", "schema": "public", "table": "filter_probe",
                                                  "filter": text}])
            for text in ("id=eq.1", "label=eq.alpha", "label=is.null"))
        probe.execute("delete from public.filter_probe where id in (1, 4)")
        default = realtime.poll()
        probe.execute("alter table public.filter_probe replica identity full")
        probe.execute("delete from public.filter_probe where id = 2; insert into public.filter_probe (id, label) "
                      "values (1, 'alpha'); delete from public.filter_probe where id = 1")
        full = realtime.poll()
    assert [e["old_record"] for e in default[on_key]] == [{"id": 1}]
    assert on_label not in default and null_label not in default  # `label` was not logged: no filter on it holds
    assert [e["old_record"]["id"] for e in full[on_label]] == [1]


def test_select_narrows_the_events_to_its_columns_and_the_key(probe: psycopg.Connection, db_url: str) -> None:
    probe.execute("insert into public.filter_probe (id, label, n) values (9, 'x', 1)")
    with Realtime(db_url) as realtime:
        narrow = realtime.subscribe_channel({"role": "authenticated"}, [
            {"event": "*", "schema": "public", "table": "filter_probe", "select": ["n", "label"]}])
        probe.execute("update public.filter_probe set n = 2 where id = 9; delete from public.filter_probe where id = 9")
        update, delete = realtime.poll()[narrow]
    assert [c["name"] for c in update["columns"]] == ["id", "label", "n"]
    assert update["record"] == {"id": 9, "label": "x", "n": 2} and update["old_record"] == {"id": 9}
    assert delete["old_record"] == {"id": 9} and [c["name"] for c in delete["columns"]] == ["id", "label", "n"]


def test_a_channel_s_entries_with_different_selections_get_an_event_each(probe: psycopg.Connection,
                                                                        db_url: str) -> None:
    with Realtime(db_url) as realtime:
        channel = realtime.subscribe_channel(SERVICE, [
            {"event": "INSERT", "schema": "public", "table": "filter_probe", "select": ["n"]},
            {"event": "*", "schema": "public", "table": "filter_probe"},
            {"event": "INSERT", "schema": "public", "table": "filter_probe", "select": ["n"], "filter": "n=gt.0"}])
        probe.execute("insert into public.filter_probe (id, label, n) values (9, 'x', 1)")
        delivered = realtime.poll_delivered()[channel]
    assert [(sorted(d.event["record"]), d.subscriptions) for d in delivered] == [
        (["amount", "at", "code", "flag", "id", "label", "n", "secret", "tags", "uid"], (1,)),  # all columns first
        (["id", "n"], (0, 2))]


@pytest.mark.parametrize(("entry", "message"), [
    ({"table": "filter_probe", "select": "n"},
     'Error parsing `select` params: expected a list of column name strings, e.g. select: ["col1", "col2"]'),
    ({"schema": "public", "table": "*", "select": ["n"]},
     "Column selection is not supported for wildcard subscriptions. Provide an explicit schema and table name."),
    ({"schema": "public", "table": "filter_probe", "filter": "n=eq.1", "select": ["nope", "n"]},
     "Unable to subscribe to changes with given parameters. An exception happened so please check your connect "
     'parameters: [event: *, schema: public, table: filter_probe, filters: [{"n", "eq", "1", false}], '
     'select: ["nope", "n"]]. Exception: ERROR P0001 (raise_exception) invalid column for select nope'),
    ({"schema": "public", "table": "filter_probe", "filter": None},
     'No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: '
     '%{"filter" => nil, "schema" => "public", "table" => "filter_probe"}'),
    ({"schema": "public", "filter": "n=eq.1"},
     'No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: '
     '%{"filter" => "n=eq.1", "schema" => "public"}'),
])
def test_a_channel_entry_is_refused_in_supabase_s_words(probe: psycopg.Connection, db_url: str, entry: dict,
                                                       message: str) -> None:
    with Realtime(db_url) as realtime, pytest.raises(ChannelRefused) as refused:
        realtime.subscribe_channel({"role": "authenticated"}, [entry])
    assert str(refused.value) == message


def test_the_library_says_the_syntax_with_supabase_s_reason(probe: psycopg.Connection, db_url: str) -> None:
    with Realtime(db_url) as realtime:
        with pytest.raises(KitError, match=r'^Error parsing `filter` params: \["lke", "x"\]: write column='):
            realtime.subscribe("service_role", tables=["filter_probe"], filter="n=not.lke.x")
        subscriber = realtime.subscribe("service_role", tables=["filter_probe"], filter="n=gt.1,label=like.B%",
                                        select=["label"])
        probe.execute(ROWS)
        assert [e["record"] for e in realtime.poll()[subscriber]] == [{"id": 2, "label": "Beta, gamma"}]


# --- the recorded table: what Supabase's own code did ------------------------------------------------------------

RECORDED = Path(__file__).parent / "data" / "supabase_filters.json"
DEMO_DATA = Path(__file__).parent.parent / "sql" / "seed.sql"
FIXED_ID = re.compile(r"^(5e|a0|b0|c0|60|f0)000000-")  # the demo data's and the cases' own ids
RANDOM_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d)T\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


def masked(value: Any, today: str) -> Any:
    """Generated ids and timestamps of the day a side ran, which differ between the two databases; and a number's
    form (Supabase writes numeric -3.00 as `-3.00`, the kit `-3`: docs/realtime.md)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: masked(item, today) for key, item in value.items()}
    if isinstance(value, list):
        return [masked(item, today) for item in value]
    if isinstance(value, str) and RANDOM_ID.match(value) and not FIXED_ID.match(value):
        return "<uuid>"
    if isinstance(value, str) and (stamp := STAMP.match(value)) and stamp[1] == today:
        return "<now>"
    return value


def digest(data: dict[str, Any], today: str) -> str:
    """A delivery's data as the recording digested it (Supabase's poller's shape: no errors as null, an absent
    record, old_record or columns as {} or []; the columns by name)."""
    kept = {key: data[key] for key in ("type", "record", "old_record", "columns", "errors") if key in data}
    if kept["type"] != "DELETE":
        kept["record"] = kept.get("record") or {}
    if kept["type"] != "INSERT":
        kept["old_record"] = kept.get("old_record") or {}
    kept["columns"], kept["errors"] = kept.get("columns") or [], kept.get("errors") or None
    kept["columns"] = [column["name"] for column in kept["columns"]]  # recorded by name
    text = json.dumps(masked(kept, today), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_every_recorded_subscription_gets_what_supabase_s_own_code_gave(empty_db: str) -> None:
    """As recorded: sql/ applied to an empty database, then the cases' setup (the demo data among it)."""
    recorded = json.loads(RECORDED.read_text())
    conn = connect(empty_db)
    migrate(conn)
    for statement in recorded["setup_sql"]:
        conn.execute(DEMO_DATA.read_text() if statement == "sql/seed.sql" else statement)
    today = datetime.now(UTC).date().isoformat()
    got: dict[str, dict[str, Any]] = {}
    with conn, Realtime(empty_db, recorded["publication"]) as realtime:
        names = {}
        for case in recorded["subscriptions"]:
            try:
                names[realtime.subscribe_channel(case["claims"], [case["params"]])] = case["name"]
                got[case["name"]] = {"deliveries": []}
            except ChannelRefused as refused:
                got[case["name"]] = {"refused": str(refused)}
        for change in recorded["changes"]:
            conn.execute(change["sql"])
            for subscriber, delivered in realtime.poll_delivered().items():
                got[names[subscriber]]["deliveries"] += [
                    f"{change['name']} {one.event['type']} {digest(json.loads(event_json(one.event)), today)}"
                    for one in delivered]
    differing = {name for name in recorded["expected"] if got.get(name) != recorded["expected"][name]}
    assert not differing, [(name, got.get(name), recorded["expected"][name]) for name in sorted(differing)[:2]]
    assert len(got) == 204 and sum("refused" in answer for answer in got.values()) == 14


def test_a_filter_postgresql_cannot_evaluate_is_only_its_own_subscriber_s_loss(
        probe: psycopg.Connection, db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A `like` pattern ending in `\\` passes Supabase's checks and raises at evaluation (on Supabase, failing the
    change feed): here it never matches, its statement alone is asked again, and everyone else's answers stand."""
    bad = "label=like.%\\"
    assert delivered_ids(probe, db_url, [bad, "label=like.a%", "label=not.like.a%"]) == {
        bad: [], "label=like.a%": [1, 3], "label=not.like.a%": [2]}
    assert any("label=like.%\\ on" in record.getMessage() for record in caplog.records)


def test_many_subscribers_each_with_its_own_filter_poll_after_poll(probe: psycopg.Connection, db_url: str) -> None:
    """300 subscribers, each `n=eq.<its number>`, over three polls of 100 rows: each receives its row alone."""
    with Realtime(db_url) as realtime:
        subscribers = [realtime.subscribe("service_role", tables=["filter_probe"], filter=f"n=eq.{n}")
                       for n in range(300)]
        received: dict[int, list[int]] = {}
        for first in range(0, 300, 100):
            probe.execute("insert into public.filter_probe (id, n) select i, i "
                          "from generate_series(%s::int, %s::int) i", [first, first + 99])
            for subscriber, events in realtime.poll().items():
                received.setdefault(subscribers.index(subscriber), []).extend(e["record"]["id"] for e in events)
    assert received == {n: [n] for n in range(300)}
