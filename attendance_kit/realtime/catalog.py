"""What the catalog says each subscriber's role may read of each table, for authorisation (authorisation.py).

One `TablePlan` per table: its primary key, its columns and their types, whether RLS is enabled on it, whether the
kit's own role (the one the realtime client connects as) reads every row, and per role an `Access`: which columns
it may select, whether it may select the primary key (so its rows can be checked), and its SELECT policies
combined into one SQL predicate where the kit can evaluate them exactly. All of it is read in one transaction
with the fingerprint of the catalog state it came from (`FINGERPRINT_SQL`), which the generated function checks
again before it runs.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class Access:
    """What one role may read of one table, from the catalog."""

    key_select: bool  # may SELECT the primary key (and use the schema): its rows can be checked
    visible: tuple[str, ...]  # the columns it may SELECT, the only ones its events carry
    predicate: str | None  # the combined SELECT policies as SQL; None where that cannot be exact


@dataclass(frozen=True)
class TablePlan:
    oid: int
    schema: str
    name: str
    key: tuple[str, ...]  # the primary key's columns
    columns: tuple[tuple[str, str], ...]  # every column: name, SQL type
    row_security: bool  # RLS is enabled on the table: Supabase checks each INSERT and UPDATE as the subscriber
    checkable: bool  # the generated function can look its rows up by key (see `_plans`)
    kit_reads_all: bool  # the kit's own role bypasses RLS here: it can read the rows for the policy form
    access: dict[str, Access]

    @property
    def qualified(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)

    @property
    def types(self) -> dict[str, str]:
        return dict(self.columns)


# The catalog state a generated function was built from: tables, columns, primary keys, privileges, policies
# and the roles' attributes and memberships (the subscribers' and the kit's own). The function recomputes it,
# with the tables locked, before it authorises anything, and refuses to run on a changed catalog (delivery
# then rebuilds it).
FINGERPRINT_SQL = """
select pg_catalog.md5(pg_catalog.concat_ws('|',
    (select pg_catalog.string_agg(row(c.oid, c.relname, n.nspname, n.nspacl, c.relrowsecurity,
         c.relforcerowsecurity, c.relowner, c.relacl)::text, ';' order by c.oid)
     from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where c.oid = any ({oids})),
    (select pg_catalog.string_agg(row(a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod, a.attcollation,
         a.attisdropped, a.attacl)::text, ';' order by a.attrelid, a.attnum)
     from pg_catalog.pg_attribute a where a.attrelid = any ({oids}) and a.attnum > 0),
    (select pg_catalog.string_agg(row(i.indrelid, i.indexrelid, i.indkey)::text, ';' order by i.indexrelid)
     from pg_catalog.pg_index i where i.indrelid = any ({oids}) and i.indisprimary),
    (select pg_catalog.string_agg(row(p.oid, p.polrelid, p.polname, p.polcmd, p.polpermissive, p.polroles,
         p.polqual)::text, ';' order by p.oid)
     from pg_catalog.pg_policy p where p.polrelid = any ({oids})),
    (select pg_catalog.string_agg(row(r.rolname, r.rolsuper, r.rolbypassrls, array(
         select m.oid from pg_catalog.pg_roles m where pg_catalog.pg_has_role(r.oid, m.oid, 'USAGE')
         order by m.oid))::text, ';' order by r.rolname)
     from pg_catalog.pg_roles r where r.rolname = any ({roles}) or r.rolname = current_user)
))
"""

_TABLES_SQL = """
select c.oid, n.nspname, c.relname,
    array(select a.attname from pg_catalog.unnest(i.indkey) with ordinality k (attnum, position)
          join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum = k.attnum order by k.position),
    array(select pg_catalog.json_build_array(a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod))::text
          from pg_catalog.pg_attribute a
          where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped order by a.attnum),
    c.relrowsecurity,
    pg_catalog.has_table_privilege(c.oid, 'SELECT') and not (c.relrowsecurity and not r.rolsuper
        and not r.rolbypassrls and not (pg_catalog.pg_has_role(r.oid, c.relowner, 'USAGE')
                                        and not c.relforcerowsecurity))
from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
join pg_catalog.pg_roles r on r.rolname = current_user
left join pg_catalog.pg_index i on i.indrelid = c.oid and i.indisprimary
where c.oid = any (%(oids)s)
"""

# Per table and role, as PostgreSQL decides it (check_enable_rls): RLS applies unless it is off for the table,
# the role is a superuser or has BYPASSRLS, or the role owns the table and the table does not FORCE it.
_ACCESS_SQL = """
select c.oid, r.rolname,
    c.relrowsecurity and not r.rolsuper and not r.rolbypassrls
        and not (pg_catalog.pg_has_role(r.oid, c.relowner, 'USAGE') and not c.relforcerowsecurity),
    pg_catalog.has_schema_privilege(r.oid, c.relnamespace, 'USAGE'),
    array(select a.attname from pg_catalog.pg_attribute a
          where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
            and pg_catalog.has_column_privilege(r.oid, c.oid, a.attnum, 'SELECT') order by a.attnum)
from pg_catalog.pg_class c cross join pg_catalog.pg_roles r
where c.oid = any (%(oids)s) and r.rolname = any (%(roles)s)
"""

# The policies that apply to a SELECT by the role (check_role_for_policy): FOR SELECT or FOR ALL, to PUBLIC or
# to a role whose privileges it has. Deparsed under the connection's search_path, the one the subscribers' queries
# run under too (as an API request runs under its own): every name the expression holds then resolves to what it
# resolved to in the policy (ruleutils qualifies whatever that path would not find or would find elsewhere).
_POLICIES_SQL = """
select p.polrelid, r.rolname, p.polpermissive, pg_catalog.pg_get_expr(p.polqual, p.polrelid), p.polqual::text
from pg_catalog.pg_policy p cross join pg_catalog.pg_roles r
where p.polrelid = any (%(oids)s) and r.rolname = any (%(roles)s) and p.polcmd in ('r', '*')
  and p.polqual is not null
  and exists (select from pg_catalog.unnest(p.polroles) pr (oid)
              where pr.oid = 0 or pg_catalog.pg_has_role(r.oid, pr.oid, 'USAGE'))
order by p.polrelid, r.rolname, p.polname
"""

# A policy reading the whole row or a system column cannot be evaluated on a row held in an array (policy form).
_WHOLE_ROW_OR_SYSTEM_COLUMN = re.compile(r":varattno (0|-)")


def read_catalog(conn: psycopg.Connection, oids: Sequence[int], roles: Sequence[str]
                 ) -> tuple[str, list[TablePlan]]:
    """The catalog's fingerprint and the tables' plans for these roles, read in one transaction."""
    params = {"oids": list(oids), "roles": list(roles)}
    with conn.transaction(), conn.cursor() as cur:
        fingerprint = cur.execute(FINGERPRINT_SQL.format(oids="%(oids)s::oid[]", roles="%(roles)s::text[]"),
                                  params).fetchone()[0]
        tables = cur.execute(_TABLES_SQL, params).fetchall()
        access = cur.execute(_ACCESS_SQL, params).fetchall()
        policies = cur.execute(_POLICIES_SQL, params).fetchall()
    return fingerprint, _plans(tables, access, policies, roles)


def _plans(tables: list[tuple], access: list[tuple], policies: list[tuple], roles: Sequence[str]) -> list[TablePlan]:
    applicable: dict[tuple[int, str], list[tuple[bool, str, str]]] = defaultdict(list)
    for oid, role, permissive, expression, tree in policies:
        applicable[oid, role].append((permissive, expression, tree))
    rights = {(oid, role): rest for oid, role, *rest in access}
    plans = []
    for oid, schema, name, key, columns, row_security, kit_reads_all in tables:
        columns = tuple(tuple(json.loads(column)) for column in columns)
        types = dict(columns)
        # The generated SQL's own names (_kit_*, and unnest's ordinality in the policy form) must not meet a
        # column's: in plpgsql a column would win (and names are case-insensitive). An array-typed primary key
        # cannot be looked up through an array of keys. Such a table's rows are checked for nobody: no events.
        checkable = bool(key) and not any(types[column].endswith("]") for column in key) and not any(
            column.lower().startswith("_kit_") for column, _ in columns)
        named_ordinality = any(column == "ordinality" for column, _ in columns)
        by_role = {}
        for role in roles:
            rls, schema_usage, visible = rights[oid, role]
            key_select = bool(key) and schema_usage and set(key) <= set(visible)
            predicate = (_predicate(rls, applicable[oid, role])
                         if checkable and key_select and not named_ordinality else None)
            by_role[role] = Access(key_select, tuple(visible), predicate)
        plans.append(TablePlan(oid, schema, name, tuple(key), columns, row_security, checkable, kit_reads_all,
                               by_role))
    return plans


def _predicate(rls: bool, policies: list[tuple[bool, str, str]]) -> str | None:
    """The role's SELECT policies combined as PostgreSQL combines them, or None if that cannot be exact."""
    if not rls:  # RLS does not apply to this role: its privilege alone decides
        return "true"
    if any(_WHOLE_ROW_OR_SYSTEM_COLUMN.search(tree) for _, _, tree in policies):
        return None
    permissive = [f"({expression})" for is_permissive, expression, _ in policies if is_permissive]
    restrictive = [f"({expression})" for is_permissive, expression, _ in policies if not is_permissive]
    # Any permissive policy (none at all: no row), and every restrictive one.
    return " and ".join([f"({' or '.join(permissive) or 'false'})", *restrictive])
