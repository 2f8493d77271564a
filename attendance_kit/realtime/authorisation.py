"""Authorisation: the server-side function that asks RLS, for every subscriber in one call.

Per poll, delivery calls one generated plpgsql function (in its connection's pg_temp schema) that loops over the
subscribers and, for each, sets its claims and role and runs one query over all the batch's rows it covers. As in
Supabase Realtime, only INSERTs and UPDATEs of tables with RLS enabled are asked about, by the new row's primary
key, when the poll runs (Supabase sends a DELETE without a check: see delivery.py). For each table and role the
query takes one of two forms, both deciding exactly what RLS decides:

- the generic form: the subscriber's own SELECT of those primary keys from the table, so the real policies
  filter the real rows;
- the policy form: the rows are read once per poll by the kit's role (which bypasses RLS) into a temporary
  table of the table's columns, hash-indexed on each column its policies name, and each subscriber's query applies
  the table's SELECT policies to them, deparsed from the catalog and combined as PostgreSQL combines them for
  that role (any permissive policy, and every restrictive one; none: no row). It runs the same expressions, as
  the same subscriber, on the same current rows. Indexed (and planned without sequential scans), a policy such
  as `student_id = auth.uid()` finds a subscriber's rows by lookup: a poll costs about the same per subscriber
  at 3,000 rows as at 300, where testing every row for every subscriber grew with both. It is used only where
  the kit can show it is exact: the kit's role bypasses RLS on the table (so it reads every row), and no
  applicable policy uses the whole row or a system column (which a row copied by its values cannot reproduce).
  Elsewhere the generic form runs.

Here: `Authoriser`, which builds a function per table set and role set from the catalog's plans (catalog.py),
with its temporary tables, caches them and drops them when the catalog changed; and the function's SQL
(`function_sql`), its names stated once in the comment above `_TableNames`. Delivery (delivery.py) fills in its
arguments and calls it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.abc import AdaptContext

from .catalog import FINGERPRINT_SQL, Access, TablePlan, read_catalog

TABLES_PER_CALL = 32  # PostgreSQL functions take at most 100 arguments: 3 + 3 per table


@dataclass
class Function:
    name: str
    plans: list[TablePlan]

    def call(self) -> sql.Composed:
        """The function's call, a typed placeholder per argument (see `_arguments`)."""
        placeholders = [sql.SQL("%s::" + sql_type) for _, sql_type in _arguments(len(self.plans))]
        return sql.SQL("select * from pg_temp.{}({})").format(sql.Identifier(self.name),
                                                              sql.SQL(", ").join(placeholders))


class Authoriser:
    """Builds, caches and drops the generated functions on its connection (one per table set and role set)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._functions: dict[tuple[tuple[int, ...], tuple[str, ...]], Function] = {}
        self._rows_tables: dict[int, str] = {}  # the policy form's temporary table of each table (oid)

    def function(self, oids: Sequence[int], roles: Sequence[str]) -> Function:
        key = (tuple(sorted(oids)), tuple(sorted(roles)))
        if key not in self._functions:
            self._functions[key] = self._build(*key)
        return self._functions[key]

    def forget(self, function: Function) -> None:
        self._functions = {key: f for key, f in self._functions.items() if f is not function}
        self.conn.execute(sql.SQL("drop function if exists pg_temp.{}").format(sql.Identifier(function.name)))

    def _build(self, oids: tuple[int, ...], roles: tuple[str, ...]) -> Function:
        fingerprint, plans = read_catalog(self.conn, oids, roles)
        name = f"kit_realtime_{secrets.token_hex(6)}"
        for plan in plans:
            if _policy_form(plan):
                self._rows_table_for(plan, roles)
        if plans:
            self.conn.execute(function_sql(self.conn, name, plans, roles, fingerprint, oids))
        return Function(name, plans)

    def _rows_table_for(self, plan: TablePlan, roles: Sequence[str]) -> None:
        """The policy form's temporary table for this table's columns as they are (one per table and connection,
        shared by its functions; a new one when the columns change): the columns without their constraints, each
        row's key number (`_kit_n`), hash indexes on the columns the policies name (no size limit, and `=` and
        `= ANY` are what policies look rows up by; arrays and composites left out: their elements may have no
        hash), readable by the subscribers' roles. Its rows go with each call's transaction (`on commit delete
        rows`: emptied in place, no new file or catalog row per poll)."""
        name = rows_table(plan)
        table = sql.Identifier(name)
        if self._rows_tables.get(plan.oid) != name:
            if plan.oid in self._rows_tables:
                self.conn.execute(sql.SQL("drop table if exists pg_temp.{}").format(
                    sql.Identifier(self._rows_tables.pop(plan.oid))))
            self.conn.execute(sql.SQL("create temporary table {} on commit delete rows as select *, null::int as "
                                      "_kit_n from {} with no data").format(table, plan.qualified))
            categories = dict(self.conn.execute(
                "select a.attname, t.typcategory from pg_catalog.pg_attribute a join pg_catalog.pg_type t "
                "on t.oid = a.atttypid where a.attrelid = %s and a.attnum > 0 and not a.attisdropped", [plan.oid]))
            for column in _named_columns(plan):
                if categories.get(column) not in ("A", "C"):
                    with contextlib.suppress(psycopg.errors.UndefinedObject):  # no hash operator class: scanned
                        self.conn.execute(sql.SQL("create index on {} using hash ({})").format(
                            table, sql.Identifier(column)))
            self._rows_tables[plan.oid] = name
        self.conn.execute(sql.SQL("grant select on {} to {}").format(
            table, sql.SQL(", ").join(map(sql.Identifier, roles))))


# --- the generated function's SQL ------------------------------------------------------------------------------
#
# The function's names, stated once. Every name it declares starts with `_kit_`, so none meets a column's (a
# table with a `_kit_` column gets no events: see `_plans`). Per subscriber, three arguments indexed by the loop:
#
#     _kit_claims[_kit_i], _kit_roles[_kit_i], _kit_groups[_kit_i]   its JWT claims, role and group (1-based)
#     _kit_gi                                                        its group, which picks its keys below
#
# then per table, numbered t by its place in the plans (from 0), the variables of `_TableNames`. Within a query:
# `_kit_x` is the table; `_kit_u` its keys, numbered (`_kit_c1`, `_kit_c2`, ... the key's columns, `_kit_n` the
# number). The policy form names the rows it judges as the table itself, because its policies name their columns
# so, numbered by unnest's `ordinality`.
#
# It returns (_kit_subscriber, _kit_table, _kit_index): each key of table _kit_table the subscriber may read,
# numbered from 1 as in the arguments; or (-1, -1, -1) alone when the catalog is no longer the one the function
# was built from.


class _TableNames:
    """The generated function's variables for table number t."""

    def __init__(self, t: int) -> None:
        self.t = t
        # Arguments, in this order (delivery's `_TableRows.arguments` fills them):
        self.keys = f"_kit_k{t}"  # text[]: the new rows' primary keys (1-D; of several columns 2-D, a key a row)
        self.group_numbers = f"_kit_g{t}"  # int[]: the numbers of the keys each group covers, group after group
        self.group_starts = f"_kit_s{t}"  # int[]: where each group's numbers start (and, one more, where they end)
        # Declared, computed once per call rather than once per subscriber:
        self.typed_keys = f"_kit_kt{t}"  # the keys in the key column's type (one-column keys), to number a match
        self.typed_group_keys = f"_kit_gt{t}"  # the keys of `group_numbers`, in that type (one-column keys)

    def of_group(self, array: str) -> str:
        """The subscriber's group's part of `group_numbers` or `typed_group_keys`."""
        return f"{array}[{self.group_starts}[_kit_gi] : {self.group_starts}[_kit_gi + 1] - 1]"

    def key_column(self, j: int) -> str:
        """Declared for a key of several columns: its column j (from 1), typed."""
        return f"_kit_k{self.t}_{j}"


def rows_table(plan: TablePlan) -> str:
    """The policy form's temporary table for a table's columns as the plan has them."""
    shape = hashlib.md5(repr(plan.columns).encode()).hexdigest()[:8]
    return f"kit_rows_{plan.oid}_{shape}"


def _named_columns(plan: TablePlan) -> list[str]:
    """The columns a role's policies name (as a word of their text: one named in a string too costs an index)."""
    text = " ".join(access.predicate or "" for access in plan.access.values())
    return [column for column, _ in plan.columns
            if re.search(r'(?<![\w$])"?' + re.escape(column) + r'"?(?![\w$])', text)]


def _policy_form(plan: TablePlan) -> bool:
    """Whether some role's query over this table takes the policy form (and so reads its rows into a table)."""
    return _checked(plan) and plan.kit_reads_all and any(a.predicate is not None for a in plan.access.values())


def _arguments(tables: int) -> list[tuple[str, str]]:
    """The function's arguments, name and SQL type: the subscribers' three, then three per table."""
    arguments = [("_kit_claims", "text[]"), ("_kit_roles", "text[]"), ("_kit_groups", "int[]")]
    for t in range(tables):
        names = _TableNames(t)
        arguments += [(names.keys, "text[]"), (names.group_numbers, "int[]"), (names.group_starts, "int[]")]
    return arguments


def function_sql(context: AdaptContext | None, name: str, plans: list[TablePlan], roles: Sequence[str],
                 fingerprint: str, oids: Sequence[int]) -> str:
    """`create function` of a plpgsql function authorising one poll for every subscriber: one query each, as that
    subscriber. Keys are cast and rows read once per call, not once per subscriber.

    `context` (the connection) quotes names and literals. The body is dollar-quoted with the function's name as
    its tag: random, so no policy's text holds it.
    """
    arguments = ", ".join(f"{argument} {sql_type}" for argument, sql_type in _arguments(len(plans)))
    tag = f"${name}$"
    return (f"create function pg_temp.{sql.Identifier(name).as_string(context)}({arguments}) "
            "returns table (_kit_subscriber int, _kit_table int, _kit_index int) "
            # Generic plans: planning anew for every subscriber and poll (the arrays change) costs more than
            # running the query.
            # The generated SQL names everything with its schema, so it keeps the connection's search_path, under
            # which the policies' helper functions resolve their own names as in a request.
            # Without sequential scans: the policy form's small tables are read by index, as policies name them.
            f"language plpgsql set plan_cache_mode = force_generic_plan set enable_seqscan = off as "
            f"{tag}{_body(context, plans, roles, fingerprint, oids)}{tag}")


def _body(context: AdaptContext | None, plans: list[TablePlan], roles: Sequence[str], fingerprint: str,
          oids: Sequence[int]) -> str:
    """Lock the tables, check the catalog, prepare each table's rows, then per subscriber its role's queries."""
    declarations = ["_kit_i int;", "_kit_gi int;"]
    preparations: list[str] = []
    for t, plan in enumerate(plans):
        if _checked(plan):
            declarations += _declarations(context, t, plan)
            preparations += _preparations(context, t, plan)
    branches = [line for role in roles for line in _role_branch(context, role, plans)]
    tables = ", ".join(plan.qualified.as_string(context) for plan in plans)
    catalog = FINGERPRINT_SQL.format(oids="'{" + ",".join(map(str, oids)) + "}'::oid[]",
                                     roles=sql.Literal(list(roles)).as_string(context) + "::text[]")
    return f"""
#variable_conflict use_column
declare
{_indented(declarations, 1)}
begin
    -- The tables stay locked (as a SELECT would lock them) so policies cannot change under the check below.
    lock table {tables} in access share mode;
    if ({catalog})
       is distinct from {sql.Literal(fingerprint).as_string(context)} then
        return query select -1, -1, -1;  -- built for another catalog: rebuild
        return;
    end if;
    perform pg_catalog.set_config('row_security', 'on', true);
{_indented(preparations, 1)}
    for _kit_i in 1 .. coalesce(pg_catalog.array_length(_kit_claims, 1), 0) loop
        _kit_gi := _kit_groups[_kit_i];
        -- What as_user and Supabase's API do: the JWT's claims, then SET LOCAL ROLE.
        perform pg_catalog.set_config('request.jwt.claims', _kit_claims[_kit_i], true),
                pg_catalog.set_config('role', _kit_roles[_kit_i], true);
{_indented(branches, 2)}
    end loop;
    perform pg_catalog.set_config('role', 'none', true), pg_catalog.set_config('request.jwt.claims', '', true);
end
"""


def _indented(lines: list[str], depth: int) -> str:
    """The lines, each indented: never split, as a policy's text or a quoted name may hold a line break."""
    pad = "    " * depth
    return "\n".join(pad + line for line in lines)


def _declarations(context: AdaptContext | None, t: int, plan: TablePlan) -> list[str]:
    names, types = _TableNames(t), plan.types
    if len(plan.key) == 1:  # all keys (to number a match) and each group's keys, typed
        key_type = types[plan.key[0]]
        declarations = [f"{names.typed_keys} {key_type}[] := {names.keys};",
                        f"{names.typed_group_keys} {key_type}[] := array(select {names.typed_keys}[_kit_n] from "
                        f"pg_catalog.unnest({names.group_numbers}) with ordinality as _kit_g (_kit_n, _kit_o) "
                        "order by _kit_o);"]
    else:  # one typed array per key column
        declarations = [f"{names.key_column(j)} {types[column]}[] := {names.keys}[:][{j}:{j}];"
                        for j, column in enumerate(plan.key, 1)]
    return declarations


def _preparations(context: AdaptContext | None, t: int, plan: TablePlan) -> list[str]:
    """Once per call, as the kit's role: read the current rows into the policy form's table (empty: each call is
    a transaction of its own, delivery.py's)."""
    if _policy_form(plan):
        return _read_current_rows(context, t, plan)
    return []


def _checked(plan: TablePlan) -> bool:
    """Supabase asks RLS only where it is enabled; the kit only where it can look the rows up."""
    return plan.row_security and plan.checkable


def _read_current_rows(context: AdaptContext | None, t: int, plan: TablePlan) -> list[str]:
    rows = f"pg_temp.{sql.Identifier(rows_table(plan)).as_string(context)}"
    source, columns = _numbered_keys(t, plan)
    return [f"insert into {rows} select _kit_x.*, _kit_u._kit_n from {source} "
            f"join {plan.qualified.as_string(context)} as _kit_x on {_key_matches(context, plan, columns)};"]


def _numbered_keys(t: int, plan: TablePlan) -> tuple[str, list[str]]:
    """The FROM item `_kit_u`, the keys numbered (`_kit_u._kit_n`), and the names of its key columns."""
    names = _TableNames(t)
    if len(plan.key) == 1:
        return f"pg_catalog.unnest({names.typed_keys}) with ordinality as _kit_u (_kit_c1, _kit_n)", ["_kit_c1"]
    columns = [f"_kit_c{j}" for j in range(1, len(plan.key) + 1)]
    arrays = ", ".join(f"pg_catalog.unnest({names.key_column(j)})" for j in range(1, len(columns) + 1))
    return f"rows from ({arrays}) with ordinality as _kit_u ({', '.join(columns)}, _kit_n)", columns


def _key_matches(context: AdaptContext | None, plan: TablePlan, columns: list[str]) -> str:
    """The table's row `_kit_x` has the key `_kit_u` holds."""
    return " and ".join(f"_kit_x.{sql.Identifier(column).as_string(context)} = _kit_u.{name}"
                        for column, name in zip(plan.key, columns, strict=True))


def _role_branch(context: AdaptContext | None, role: str, plans: list[TablePlan]) -> list[str]:
    """The lines a subscriber of this role runs: its queries over every table, as one result."""
    test = f"if _kit_roles[_kit_i] = {sql.Literal(role).as_string(context)} then"
    queries = [query for t, plan in enumerate(plans) for query in _queries(context, t, plan, plan.access[role])]
    if not queries:
        return [f"{test} null; end if;"]
    lines = [test, f"    return query {queries[0]}", *(f"        union all {query}" for query in queries[1:])]
    lines[-1] += ";"
    return [*lines, "end if;"]


def _queries(context: AdaptContext | None, t: int, plan: TablePlan, access: Access) -> list[str]:
    """A role's query over one table's new rows, in the policy or the generic form (none: nothing to check)."""
    if not _checked(plan) or not access.key_select:
        return []
    if access.predicate is not None and plan.kit_reads_all:
        return [_policy_query(context, t, plan, access.predicate)]
    return [_generic_query(context, t, plan)]


def _generic_query(context: AdaptContext | None, t: int, plan: TablePlan) -> str:
    """The subscriber's own SELECT of the keys its group covers: the real policies on the real rows."""
    names, table = _TableNames(t), plan.qualified.as_string(context)
    if len(plan.key) == 1:
        key = f"_kit_x.{sql.Identifier(plan.key[0]).as_string(context)}"
        return (f"select _kit_i, {t}, pg_catalog.array_position({names.typed_keys}, {key}) "
                f"from {table} as _kit_x where {key} = any ({names.of_group(names.typed_group_keys)})")
    source, columns = _numbered_keys(t, plan)
    return (f"select _kit_i, {t}, _kit_u._kit_n::int from {source} "
            f"where _kit_u._kit_n = any ({names.of_group(names.group_numbers)}) "
            f"and exists (select from {table} as _kit_x where {_key_matches(context, plan, columns)})")


def _policy_query(context: AdaptContext | None, t: int, plan: TablePlan, predicate: str) -> str:
    """The table's SELECT policies on the current rows the kit's role read, in a table of the table's own columns
    named as the table, numbered by key."""
    names, relation = _TableNames(t), sql.Identifier(plan.name).as_string(context)
    rows = f"pg_temp.{sql.Identifier(rows_table(plan)).as_string(context)}"
    return (f"select _kit_i, {t}, {relation}._kit_n from {rows} as {relation} "
            f"where {relation}._kit_n = any ({names.of_group(names.group_numbers)}) and ({predicate})")
