"""The realtime change feed: Supabase Realtime's `postgres_changes`, run locally against real RLS.

A change travels through four steps, each a part of this module:

1. **The slot** (`ChangeFeed`). One connection owns a *temporary* logical replication slot with PostgreSQL's
   built-in `pgoutput` plugin. A temporary slot belongs to the session that created it and PostgreSQL drops it
   when that session ends for any reason (a normal close, an exception, the client killed with -9), so no slot
   outlives its consumer to pin WAL. Each poll reads the publication with `pg_logical_slot_get_binary_changes`,
   which returns whole transactions in commit order and consumes them: nothing is read twice.
2. **The decoder** (`PgOutputDecoder`). pgoutput protocol 1: Begin, Relation, Insert, Update, Delete, Truncate,
   Commit (Type, Origin and logical messages are read and ignored). Values arrive as text and become Python
   values through psycopg's own loaders, as if they had been selected.
3. **Subscriptions** (`Realtime.subscribe`). Like Supabase's: a table (or every published one), an event
   (`INSERT`, `UPDATE`, `DELETE`, `TRUNCATE` or `*`) and an optional column filter in Supabase's syntax
   (`session_id=eq.<uuid>`; also `neq`, `lt`, `lte`, `gt`, `gte`, `in.(a,b)`).
4. **Authorisation**, Supabase's rule: a subscriber receives an INSERT or UPDATE only if, when it is delivered,
   it can SELECT that row under RLS. Per poll the kit runs ONE query per subscriber, covering every row of the
   batch it subscribed to, as that subscriber (its claims in `request.jwt.claims`, its role set locally, exactly
   as `as_user` and Supabase's API do). All subscribers' queries run in one server-side loop (a function in the
   session's `pg_temp` schema, generated from the catalog), so a poll costs one round trip, not one per
   subscriber; with many subscribers they are split across a few connections that run in parallel. How the
   query stays exactly equivalent to RLS: see "authorisation" below.

DELETE (and the old values of an UPDATE). Supabase sends a deleted row's primary key, unfiltered, to every
subscriber of the table when RLS is on. The kit does better where it can do so exactly: when the table logs whole
old rows (REPLICA IDENTITY FULL), it evaluates the table's own SELECT policies, combined as PostgreSQL combines
them for that role, on the old row as that subscriber. The subscriber receives the DELETE with the old row only if
it could read that row were it still there; the others receive nothing. Where the kit cannot prove the evaluation
exact (no full old row, a policy using whole-row or system columns) it falls back to Supabase's behaviour: the
primary key alone, to every subscriber of the table that may select it. An UPDATE's old values follow the same
rule; otherwise its `old_record` holds only the primary key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import struct
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypedDict

import psycopg
from psycopg import sql
from psycopg.pq import Format

from .connection import API_ROLES, connect, require_logical_decoding, resolve_user
from .errors import KitError, one_line

log = logging.getLogger(__name__)

PUBLICATION = "live_attendance_pub"
EVENT_TYPES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")
# Supabase Realtime polls its slot every 100 ms; here a poll that found changes is followed at once by the next.
POLL_INTERVAL = 0.1
# Bounds one poll's work. pgoutput only ends a poll between transactions, so a larger transaction still
# arrives whole.
MAX_MESSAGES_PER_POLL = 20_000
_POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


class _UnchangedToast:
    """pgoutput's 'u': a large (TOASTed) value an UPDATE left unchanged, which the WAL does not carry."""

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


# In `record` where an UPDATE left a TOASTed value unchanged and the table does not log old rows
# (with REPLICA IDENTITY FULL the old row supplies the value instead).
UNCHANGED_TOAST = _UnchangedToast()

RawValue = bytes | None | _UnchangedToast


class Event(TypedDict):
    """One change as a subscriber receives it; the keys of Supabase Realtime's payload."""

    schema: str
    table: str
    type: str  # INSERT, UPDATE, DELETE or TRUNCATE
    commit_timestamp: datetime
    record: dict[str, Any]  # the new row (INSERT, UPDATE)
    old_record: dict[str, Any]  # the old row, or its primary key (UPDATE, DELETE)
    columns: list[dict[str, str]]  # [{"name": ..., "type": ...}] of the columns the subscriber may select


# --- pgoutput, protocol version 1 ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    in_identity: bool  # part of the replica identity (every column under REPLICA IDENTITY FULL)


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    name: str
    replica_identity: str  # pg_class.relreplident: d, f, i or n
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


@dataclass(frozen=True)
class Change:
    """One row change (or one truncated table) of a committed transaction, values still as pgoutput's text."""

    type: str
    relation: Relation
    new: tuple[RawValue, ...] | None
    old: tuple[RawValue, ...] | None
    old_is_full: bool  # 'O': the whole old row (REPLICA IDENTITY FULL); 'K': its identity columns only
    commit_timestamp: datetime
    xid: int


class PgOutputDecoder:
    """Turns pgoutput messages into `Change`s, a transaction at a time (at its Commit)."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self._pending: list[Change] = []
        self._timestamp = _POSTGRES_EPOCH
        self._xid = 0

    def feed(self, data: bytes) -> list[Change]:
        """Take one message; at a Commit return that transaction's changes, in order, else []."""
        kind = data[:1]
        if kind == b"B":  # final LSN, commit timestamp, xid
            _lsn, micros, self._xid = struct.unpack_from("!QqI", data, 1)
            self._timestamp = _POSTGRES_EPOCH + timedelta(microseconds=micros)
            self._pending = []
        elif kind == b"C":
            done, self._pending = self._pending, []
            return done
        elif kind == b"R":
            relation = _parse_relation(data)
            self.relations[relation.oid] = relation
        elif kind in (b"I", b"U", b"D"):
            self._pending.append(self._row_change(data))
        elif kind == b"T":  # relation count, options, relation ids
            (count,) = struct.unpack_from("!I", data, 1)
            for oid in struct.unpack_from(f"!{count}I", data, 6):
                self._pending.append(self._change("TRUNCATE", self.relations[oid], None, None, False))
        elif kind not in (b"Y", b"O", b"M"):  # Type, Origin, logical message: nothing a subscriber receives
            raise ValueError(f"unexpected pgoutput message {kind!r}")
        return []

    def _row_change(self, data: bytes) -> Change:
        kind = {b"I": "INSERT", b"U": "UPDATE", b"D": "DELETE"}[data[:1]]
        (oid,) = struct.unpack_from("!I", data, 1)
        relation = self.relations[oid]
        pos, old, old_is_full, new = 5, None, False, None
        marker = data[pos:pos + 1]
        if marker in (b"K", b"O"):
            old_is_full = marker == b"O"
            old, pos = _parse_tuple(data, pos + 1)
            marker = data[pos:pos + 1]
        if marker == b"N":
            new, pos = _parse_tuple(data, pos + 1)
        return self._change(kind, relation, new, old, old_is_full)

    def _change(self, kind: str, relation: Relation, new: Any, old: Any, old_is_full: bool) -> Change:
        return Change(kind, relation, new, old, old_is_full, self._timestamp, self._xid)


def _parse_string(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\0", pos)
    return data[pos:end].decode(), end + 1


def _parse_relation(data: bytes) -> Relation:
    (oid,) = struct.unpack_from("!I", data, 1)
    schema, pos = _parse_string(data, 5)
    name, pos = _parse_string(data, pos)
    identity = chr(data[pos])
    (count,) = struct.unpack_from("!H", data, pos + 1)
    pos += 3
    columns = []
    for _ in range(count):
        flags = data[pos]
        column, pos = _parse_string(data, pos + 1)
        type_oid, modifier = struct.unpack_from("!Ii", data, pos)
        pos += 8
        columns.append(Column(column, type_oid, modifier, bool(flags & 1)))
    return Relation(oid, schema or "pg_catalog", name, identity, tuple(columns))


def _parse_tuple(data: bytes, pos: int) -> tuple[tuple[RawValue, ...], int]:
    (count,) = struct.unpack_from("!H", data, pos)
    pos += 2
    values: list[RawValue] = []
    for _ in range(count):
        kind = data[pos:pos + 1]
        pos += 1
        if kind == b"n":
            values.append(None)
        elif kind == b"u":
            values.append(UNCHANGED_TOAST)
        elif kind == b"t":
            (length,) = struct.unpack_from("!I", data, pos)
            values.append(data[pos + 4:pos + 4 + length])
            pos += 4 + length
        else:  # 'b' (binary) needs the `binary` option, which the feed never asks for
            raise ValueError(f"unexpected pgoutput tuple value kind {kind!r}")
    return tuple(values), pos


# --- the slot --------------------------------------------------------------------------------------------------


class ChangeFeed:
    """A temporary pgoutput slot on the feed's own connection, read by polling; closes with the connection."""

    def __init__(self, database_url: str | None = None, publication: str = PUBLICATION,
                 *, max_messages: int = MAX_MESSAGES_PER_POLL) -> None:
        self.publication = publication
        self.max_messages = max_messages
        self.slot_name = f"kit_realtime_{secrets.token_hex(6)}"
        self.decoder = PgOutputDecoder()
        self.conn = connect(database_url)
        try:
            require_logical_decoding(self.conn)
            self._check_publication()
            self._quiet_server_log()
            self._create_slot()
        except BaseException:
            self.conn.close()
            raise
        self._types = _Types(self.conn)

    def _check_publication(self) -> None:
        if self.conn.execute("select from pg_publication where pubname = %s", [self.publication]).fetchone() is None:
            raise KitError(f"no publication {self.publication!r} in this database: apply the migrations "
                           "({command}) or name an existing publication", command="migrate")

    def _quiet_server_log(self) -> None:
        """Every decoding call logs two LOG lines with their statement: polled several times a second, an idle
        listener wrote ~600 MB of server log a day. This session logs only FATAL and worse, where its role may say
        so (a superuser, as in the kit's cluster); its errors still reach the kit as exceptions."""
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            self.conn.execute("set log_min_messages = fatal")

    def _create_slot(self) -> None:
        try:
            # temporary => true: the slot is this session's and dies with it.
            self.conn.execute("select pg_create_logical_replication_slot(%s, 'pgoutput', true)", [self.slot_name])
        except psycopg.errors.InsufficientPrivilege:
            raise KitError(f"role {self.conn.info.user!r} may not create replication slots: connect as a "
                           "superuser or a role WITH REPLICATION") from None
        except psycopg.errors.ConfigurationLimitExceeded:
            raise KitError("all replication slots are in use: raise max_replication_slots or drop unused slots "
                           "(see pg_replication_slots)") from None

    def poll(self) -> list[Change]:
        """The changes of every transaction committed since the last poll, in commit order; consumes them."""
        try:
            rows = self.conn.execute(
                "select data from pg_logical_slot_get_binary_changes(%s, null, %s, "
                "'proto_version', '1', 'publication_names', %s)",
                [self.slot_name, self.max_messages, _quoted_name(self.publication)],
            ).fetchall()
        except psycopg.OperationalError as error:
            raise KitError(f"lost the change feed's connection (its slot is gone with it): {one_line(error)}"
                           ) from None
        changes: list[Change] = []
        for (data,) in rows:
            changes.extend(self.decoder.feed(data))
        return changes

    def values(self, change: Change) -> tuple[dict[str, Any], dict[str, Any]]:
        """The change's new and old row as Python values, by column name (an absent row is {})."""
        relation = change.relation
        self._types.prepare(relation)
        old = {} if change.old is None else self._types.row(relation, change.old, full=change.old_is_full)
        if change.new is None:
            return {}, old
        new = self._types.row(relation, change.new, full=True)
        for name, value in new.items():
            if value is UNCHANGED_TOAST and name in old:  # the old row (REPLICA IDENTITY FULL) has it
                new[name] = old[name]
        return new, old

    def type_name(self, oid: int) -> str:
        return self._types.name(oid)

    def close(self) -> None:
        """Drop the slot and close the connection (dropping the session would drop the slot anyway)."""
        if self.conn.closed:
            return
        try:
            self.conn.execute("select pg_drop_replication_slot(%s)", [self.slot_name])
        except psycopg.Error:
            pass  # the session is going away, and its temporary slot with it
        finally:
            self.conn.close()

    def __enter__(self) -> ChangeFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _quoted_name(name: str) -> str:
    """pgoutput reads publication_names as a list of identifiers."""
    return '"' + name.replace('"', '""') + '"'


class _Types:
    """Python values for pgoutput's text values through psycopg's loaders, and type names for `columns`."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._names: dict[int, str] = {}
        self._loaders: dict[int, Any] = {}

    def prepare(self, relation: Relation) -> None:
        missing = [column.type_oid for column in relation.columns if column.type_oid not in self._names]
        if not missing:
            return
        for oid in missing:
            # A domain loads as its base type; types psycopg does not know (enums, ...) load as text.
            name, base = self.conn.execute("select typname, oid from pg_type where oid = %s", [oid]).fetchone()
            while True:
                row = self.conn.execute("select typbasetype from pg_type where oid = %s and typtype = 'd'",
                                        [base]).fetchone()
                if row is None:
                    break
                base = row[0]
            loader = self.conn.adapters.get_loader(base, Format.TEXT) or self.conn.adapters.get_loader(0, Format.TEXT)
            self._names[oid] = name
            self._loaders[oid] = loader(base, self.conn)

    def name(self, oid: int) -> str:
        return self._names.get(oid, str(oid))

    def row(self, relation: Relation, raw: tuple[RawValue, ...], *, full: bool) -> dict[str, Any]:
        """A tuple's values by column name; for a key-only ('K') tuple just the identity columns."""
        row = {}
        for column, value in zip(relation.columns, raw, strict=True):
            if not full and not column.in_identity:
                continue
            row[column.name] = value if value is None or value is UNCHANGED_TOAST else (
                self._loaders[column.type_oid].load(value))
        return row


# --- subscriptions ---------------------------------------------------------------------------------------------

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
    _literal: str = field(default="", repr=False)


def _claims_literal(subscriber: Subscriber) -> str:
    """The claims as JSON, quoted as an element of a text[] literal (computed once per subscriber)."""
    if not subscriber._literal:
        encoded = json.dumps(subscriber.claims)
        subscriber._literal = '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return subscriber._literal


# --- authorisation ---------------------------------------------------------------------------------------------
#
# Per poll, the feed calls one generated plpgsql function (in the session's pg_temp schema) that loops over the
# subscribers and, for each, sets its claims and role and runs one query over all the batch's rows it covers.
# For each table and role the query takes one of two forms, both deciding exactly what RLS decides:
#
# - the generic form: the subscriber's own SELECT of those primary keys from the table, so the real policies
#   filter the real rows;
# - the policy form: the rows are read once per poll by the feed's role (which bypasses RLS), and each
#   subscriber's query applies the table's SELECT policies to them, deparsed from the catalog and combined as
#   PostgreSQL combines them for that role (any permissive policy, and every restrictive one; none: no row).
#   It runs the same expressions, as the same subscriber, on the same current rows, without an index lookup
#   per row and subscriber, which is most of the generic form's cost. It is used only where the kit can show
#   it is exact: the feed's role bypasses RLS on the table (so it reads every row), and no applicable policy
#   uses the whole row or a system column (which a row rebuilt from its values cannot reproduce). Elsewhere
#   the generic form runs.
#
# The old rows of DELETEs and UPDATEs (REPLICA IDENTITY FULL) are judged by the policy form, on the old
# values: the only exact way to ask whether a subscriber could read a row that is gone.

TABLES_PER_CALL = 16  # PostgreSQL functions take at most 100 arguments: 3 + 5 per table
SUBSCRIBERS_PER_WORKER = 200  # below this, another connection costs more than it saves


@dataclass(frozen=True)
class _Access:
    """What one role may read of one table, from the catalog."""

    key_select: bool  # may SELECT the primary key (and use the schema): its rows can be checked
    table_select: bool  # may SELECT the whole table: it hears of a TRUNCATE
    visible: tuple[str, ...]  # the columns it may SELECT, the only ones its events carry
    predicate: str | None  # the combined SELECT policies as SQL; None where that cannot be exact


@dataclass(frozen=True)
class _TablePlan:
    oid: int
    schema: str
    name: str
    key: tuple[str, ...]  # the primary key's columns
    columns: tuple[tuple[str, str], ...]  # every column: name, SQL type
    feed_reads_all: bool  # the feed's own role bypasses RLS here: it can read the rows for the policy form
    access: dict[str, _Access]

    @property
    def qualified(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)

    @property
    def types(self) -> dict[str, str]:
        return dict(self.columns)


# The catalog state a generated function was built from: tables, columns, primary keys, privileges, policies
# and the roles' attributes and memberships (the subscribers' and the feed's own). The function recomputes it,
# with the tables locked, before it authorises anything, and refuses to run on a changed catalog (the feed
# then rebuilds it).
_FINGERPRINT_SQL = """
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
    pg_catalog.has_table_privilege(r.oid, c.oid, 'SELECT'),
    array(select a.attname from pg_catalog.pg_attribute a
          where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
            and pg_catalog.has_column_privilege(r.oid, c.oid, a.attnum, 'SELECT') order by a.attnum)
from pg_catalog.pg_class c cross join pg_catalog.pg_roles r
where c.oid = any (%(oids)s) and r.rolname = any (%(roles)s)
"""

# The policies that apply to a SELECT by the role (check_role_for_policy): FOR SELECT or FOR ALL, to PUBLIC or
# to a role whose privileges it has. Deparsed under the session's search_path, the one the subscribers' queries
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

# A policy reading the whole row or a system column cannot be evaluated on a row rebuilt from its values.
_WHOLE_ROW_OR_SYSTEM_COLUMN = re.compile(r":varattno (0|-)")


@dataclass
class _Function:
    name: str
    plans: list[_TablePlan]


class _Authoriser:
    """Builds, caches and calls the generated authorisation functions (one per table set and role set)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._functions: dict[tuple[tuple[int, ...], tuple[str, ...]], _Function] = {}

    def function(self, oids: Sequence[int], roles: Sequence[str]) -> _Function:
        key = (tuple(sorted(oids)), tuple(sorted(roles)))
        if key not in self._functions:
            self._functions[key] = self._build(*key)
        return self._functions[key]

    def forget(self, function: _Function) -> None:
        self._functions = {key: f for key, f in self._functions.items() if f is not function}
        self.conn.execute(sql.SQL("drop function if exists pg_temp.{}").format(sql.Identifier(function.name)))

    def _build(self, oids: tuple[int, ...], roles: tuple[str, ...]) -> _Function:
        params = {"oids": list(oids), "roles": list(roles)}
        with self.conn.transaction(), self.conn.cursor() as cur:
            fingerprint = cur.execute(_FINGERPRINT_SQL.format(oids="%(oids)s::oid[]", roles="%(roles)s::text[]"),
                                      params).fetchone()[0]
            tables = cur.execute(_TABLES_SQL, params).fetchall()
            access = cur.execute(_ACCESS_SQL, params).fetchall()
            policies = cur.execute(_POLICIES_SQL, params).fetchall()
        plans = _plans(tables, access, policies, roles)
        name = f"kit_realtime_{secrets.token_hex(6)}"
        if plans:
            self.conn.execute(_function_sql(self.conn, name, plans, roles, fingerprint, oids))
        return _Function(name, plans)


def _plans(tables: list[tuple], access: list[tuple], policies: list[tuple], roles: Sequence[str]) -> list[_TablePlan]:
    applicable: dict[tuple[int, str], list[tuple[bool, str, str]]] = defaultdict(list)
    for oid, role, permissive, expression, tree in policies:
        applicable[oid, role].append((permissive, expression, tree))
    rights = {(oid, role): rest for oid, role, *rest in access}
    plans = []
    for oid, schema, name, key, columns, feed_reads_all in tables:
        columns = tuple(tuple(json.loads(column)) for column in columns)
        types = dict(columns)
        # The generated SQL's own names (_kit_*, and unnest's ordinality in the policy form) must not meet a
        # column's: in plpgsql a column would win (and names are case-insensitive). An array-typed primary key
        # cannot be looked up through an array of keys. Such a table's rows are checked for nobody: no events.
        if any(types[column].endswith("]") for column in key) or any(
                column.lower().startswith("_kit_") for column, _ in columns):
            key = []
        rebuildable = not any(column == "ordinality" for column, _ in columns)
        by_role = {}
        for role in roles:
            rls, schema_usage, table_select, visible = rights[oid, role]
            key_select = bool(key) and schema_usage and set(key) <= set(visible)
            predicate = _predicate(rls, applicable[oid, role]) if key_select and rebuildable else None
            by_role[role] = _Access(key_select, schema_usage and table_select, tuple(visible), predicate)
        plans.append(_TablePlan(oid, schema, name, tuple(key), columns, feed_reads_all, by_role))
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


def _function_sql(conn: psycopg.Connection, name: str, plans: list[_TablePlan], roles: Sequence[str],
                  fingerprint: str, oids: Sequence[int]) -> str:
    """A plpgsql function authorising one poll for every subscriber: one query each, as that subscriber.

    Arguments: each subscriber's claims, role and group (1-based); then per table t (see `_Batch.arguments`)
    `_kit_k{t}` the primary keys of the batch's new rows, `_kit_g{t}` each group's keys (one-column keys),
    `_kit_m{t}` which keys each group covers, `_kit_o{t}` the old rows to judge (text) and `_kit_h{t}` which of
    them each group covers. Returns (subscriber, kind, table, index): each key (kind 0) and old row (kind 1)
    the subscriber may read. Keys and rows are cast, read or rebuilt once per call, not once per subscriber.
    """

    def text(composable: sql.Composable) -> str:
        return composable.as_string(conn)

    arguments = ["_kit_claims text[]", "_kit_roles text[]", "_kit_groups int[]"]
    declarations = ["_kit_i int;", "_kit_gi int;"]
    preparations = []
    for t, plan in enumerate(plans):
        arguments += [f"_kit_k{t} text[]", f"_kit_g{t} text[]", f"_kit_m{t} bool[]", f"_kit_o{t} text[]",
                      f"_kit_h{t} bool[]"]
        declarations += _declarations(t, plan, text)
        preparations += _preparations(t, plan, text)
    branches = []
    for role in roles:
        queries = []
        for t, plan in enumerate(plans):
            access = plan.access[role]
            if access.key_select and access.predicate is not None and plan.feed_reads_all:
                queries.append(_policy_query(t, plan, access.predicate, "current", text))
            elif access.key_select:
                queries.append(_generic_query(t, plan, text))
            if access.predicate is not None:
                queries.append(_policy_query(t, plan, access.predicate, "old", text))
        action = f"return query {' union all '.join(queries)};" if queries else "null;"
        branches.append(f"if _kit_roles[_kit_i] = {text(sql.Literal(role))} then {action} end if;")
    indent = "\n" + " " * 4
    body = f"""
#variable_conflict use_column
declare{indent}{indent.join(declarations)}
begin
    -- The tables stay locked (as a SELECT would lock them) so policies cannot change under the check below.
    lock table {', '.join(text(plan.qualified) for plan in plans)} in access share mode;
    if ({_FINGERPRINT_SQL.format(oids="'{" + ','.join(map(str, oids)) + "}'::oid[]",
                                 roles=text(sql.Literal(list(roles))) + '::text[]')})
       is distinct from {text(sql.Literal(fingerprint))} then
        return query select -1, -1, -1, -1;  -- built for another catalog: rebuild
        return;
    end if;
    perform pg_catalog.set_config('row_security', 'on', true);{indent}{indent.join(preparations)}
    for _kit_i in 1 .. coalesce(pg_catalog.array_length(_kit_claims, 1), 0) loop
        _kit_gi := _kit_groups[_kit_i];
        -- What as_user and Supabase's API do: the JWT's claims, then SET LOCAL ROLE.
        perform pg_catalog.set_config('request.jwt.claims', _kit_claims[_kit_i], true),
                pg_catalog.set_config('role', _kit_roles[_kit_i], true);
        {(indent + '    ').join(branches)}
    end loop;
    perform pg_catalog.set_config('role', 'none', true), pg_catalog.set_config('request.jwt.claims', '', true);
end
"""
    tag = f"$kit_{secrets.token_hex(4)}$"
    return (f"create function pg_temp.{text(sql.Identifier(name))}({', '.join(arguments)}) "
            "returns table (_kit_subscriber int, _kit_kind int, _kit_table int, _kit_index int) "
            # Generic plans: planning anew for every subscriber and poll (the arrays change) costs more than
            # running the query.
            # The generated SQL names everything with its schema, so it keeps the session's search_path, under
            # which the policies' helper functions resolve their own names as in a request.
            f"language plpgsql set plan_cache_mode = force_generic_plan as {tag}{body}{tag}")


def _declarations(t: int, plan: _TablePlan, text: Any) -> list[str]:
    types, row_type = plan.types, text(plan.qualified)
    if len(plan.key) == 1:  # all keys (to number a match) and each group's keys, typed
        declarations = [f"_kit_kt{t} {types[plan.key[0]]}[] := _kit_k{t};",
                        f"_kit_gt{t} {types[plan.key[0]]}[] := _kit_g{t};"]
    else:  # one typed array per key column
        declarations = [f"_kit_k{t}_{j} {types[column]}[] := _kit_k{t}[:][{j}:{j}];"
                        for j, column in enumerate(plan.key, 1)]
    # The current rows (policy form) with their key numbers, and the old rows rebuilt as the table's row type.
    return declarations + [f"_kit_cur{t} {row_type}[];", f"_kit_curn{t} int[];", f"_kit_old{t} {row_type}[];"]


def _key_source(t: int, plan: _TablePlan) -> tuple[str, list[str]]:
    """FROM item numbering the keys (`_kit_u._kit_n`), and its key column names."""
    if len(plan.key) == 1:
        return f"pg_catalog.unnest(_kit_kt{t}) with ordinality as _kit_u (_kit_c1, _kit_n)", ["_kit_c1"]
    names = [f"_kit_c{j}" for j in range(1, len(plan.key) + 1)]
    arrays = ", ".join(f"pg_catalog.unnest(_kit_k{t}_{j})" for j in range(1, len(names) + 1))
    return f"rows from ({arrays}) with ordinality as _kit_u ({', '.join(names)}, _kit_n)", names


def _preparations(t: int, plan: _TablePlan, text: Any) -> list[str]:
    """Once per call, as the feed's role: read the current rows (policy form), rebuild the old rows."""
    statements = []
    if plan.feed_reads_all and any(a.key_select and a.predicate is not None for a in plan.access.values()):
        source, names = _key_source(t, plan)
        matches = " and ".join(f"_kit_x.{text(sql.Identifier(column))} = _kit_u.{name}"
                               for column, name in zip(plan.key, names, strict=True))
        statements.append(
            f"select pg_catalog.array_agg(_kit_x order by _kit_u._kit_n), "
            f"pg_catalog.array_agg(_kit_u._kit_n::int order by _kit_u._kit_n) into _kit_cur{t}, _kit_curn{t} "
            f"from {source} join {text(plan.qualified)} as _kit_x on {matches};")
    if any(a.predicate is not None for a in plan.access.values()):
        names = [f"_kit_c{j}" for j in range(1, len(plan.columns) + 1)]
        values = ", ".join(f"(_kit_v.{name})::{sql_type}"
                           for name, (_, sql_type) in zip(names, plan.columns, strict=True))
        arrays = ", ".join(f"pg_catalog.unnest(_kit_o{t}[:][{j}:{j}])" for j in range(1, len(names) + 1))
        statements.append(
            f"if pg_catalog.cardinality(_kit_o{t}) > 0 then _kit_old{t} := array(select row({values})::"
            f"{text(plan.qualified)} from rows from ({arrays}) with ordinality as _kit_v ({', '.join(names)}, "
            f"_kit_n) order by _kit_v._kit_n); end if;")
    return statements


def _generic_query(t: int, plan: _TablePlan, text: Any) -> str:
    """The subscriber's own SELECT of the keys its group covers: the real policies on the real rows."""
    if len(plan.key) == 1:
        key = f"_kit_x.{text(sql.Identifier(plan.key[0]))}"
        return (f"select _kit_i, 0, {t}, pg_catalog.array_position(_kit_kt{t}, {key}) "
                f"from {text(plan.qualified)} as _kit_x where {key} = any (_kit_gt{t}[_kit_gi:_kit_gi][:])")
    source, names = _key_source(t, plan)
    matches = " and ".join(f"_kit_x.{text(sql.Identifier(column))} = _kit_u.{name}"
                           for column, name in zip(plan.key, names, strict=True))
    return (f"select _kit_i, 0, {t}, _kit_u._kit_n::int from {source} where _kit_m{t}[_kit_gi][_kit_u._kit_n] "
            f"and exists (select from {text(plan.qualified)} as _kit_x where {matches})")


def _policy_query(t: int, plan: _TablePlan, predicate: str, rows: str, text: Any) -> str:
    """The table's SELECT policies on rows of its own row type, named as the table: the current rows the
    feed read (kind 0, numbered by key) or the old rows (kind 1)."""
    relation = text(sql.Identifier(plan.name))
    if rows == "current":
        kind, array, index, mask = 0, f"_kit_cur{t}", f"_kit_curn{t}[{relation}.ordinality]", f"_kit_m{t}"
    else:
        kind, array, index, mask = 1, f"_kit_old{t}", f"{relation}.ordinality::int", f"_kit_h{t}"
    return (f"select _kit_i, {kind}, {t}, {index} from pg_catalog.unnest({array}) with ordinality as {relation} "
            f"where {mask}[_kit_gi][{index}] and ({predicate})")


@dataclass
class _Batch:
    """One poll's authorisation request: per table the keys and old rows, per group what it covers."""

    plans: list[_TablePlan]
    groups: int
    keys: list[dict[tuple[str | None, ...], int]] = field(default_factory=list)  # [t]: key -> index (1-based)
    olds: list[list[list[str | None]]] = field(default_factory=list)  # [t]: old rows as text
    old_positions: list[list[int]] = field(default_factory=list)  # [t]: the change of each old row
    covered_keys: list[list[dict[int, list[int]]]] = field(default_factory=list)  # [t][g]: key index -> positions
    covered_olds: list[list[set[int]]] = field(default_factory=list)  # [t][g]: old-row indexes
    old_index: dict[int, int] = field(default_factory=dict)  # position -> old-row index
    rebuildable: set[int] = field(default_factory=set)  # positions whose whole old row pgoutput sent

    def __post_init__(self) -> None:
        count = len(self.plans)
        self.keys = [{} for _ in range(count)]
        self.olds = [[] for _ in range(count)]
        self.old_positions = [[] for _ in range(count)]
        self.covered_keys = [[defaultdict(list) for _ in range(self.groups)] for _ in range(count)]
        self.covered_olds = [[set() for _ in range(self.groups)] for _ in range(count)]

    def cover_row(self, t: int, group: int, key: tuple[str | None, ...], position: int) -> None:
        index = self.keys[t].setdefault(key, len(self.keys[t]) + 1)
        self.covered_keys[t][group][index].append(position)

    def cover_old(self, t: int, group: int, row: list[str | None], position: int) -> None:
        if position not in self.old_index:
            self.olds[t].append(row)
            self.old_positions[t].append(position)
            self.old_index[position] = len(self.olds[t])
        self.covered_olds[t][group].add(self.old_index[position])

    def arguments(self) -> list[Any]:
        """Per table: the keys (1-D for a one-column key, else 2-D), each group's keys (one-column key, NULL
        padded to a rectangle, as PostgreSQL has no ragged arrays), a mask of them per group, the old rows and
        a mask of them per group."""
        arguments: list[Any] = []
        for t, plan in enumerate(self.plans):
            keys = list(self.keys[t])
            if len(plan.key) == 1:
                per_group = [[keys[i - 1][0] for i in covered] for covered in self.covered_keys[t]]
                width = max(map(len, per_group), default=0)
                arguments += [[key[0] for key in keys],
                              [row + [None] * (width - len(row)) for row in per_group] if width else []]
            else:
                arguments += [[list(key) for key in keys], []]
            arguments += [_mask(self.covered_keys[t], len(keys)), self.olds[t],
                          _mask(self.covered_olds[t], len(self.olds[t]))]
        return arguments


def _mask(covered: Sequence[Any], count: int) -> list[list[bool]]:
    """Per group, whether it covers item 1..count."""
    return [[i in group for i in range(1, count + 1)] for group in covered] if count else []


def _lost(error: psycopg.Error) -> KitError:
    """A lost connection ends the feed: the batch is consumed from the slot, so going on would drop events."""
    return KitError(f"realtime lost a connection while authorising a batch ({one_line(error)}): stopping "
                    "rather than dropping its events")


def _text(value: RawValue) -> str | None:
    return None if value is None or value is UNCHANGED_TOAST else value.decode()


# --- the feed with subscribers ---------------------------------------------------------------------------------


class Realtime:
    """A change feed with subscribers: each poll gives each subscriber the events RLS lets it see, in order.

    Use it as a context manager (or call `close`): the slot is dropped with the connection.
    """

    def __init__(self, database_url: str | None = None, publication: str = PUBLICATION, *,
                 poll_interval: float = POLL_INTERVAL, max_messages: int = MAX_MESSAGES_PER_POLL,
                 workers: int = 2, subscribers_per_worker: int = SUBSCRIBERS_PER_WORKER) -> None:
        """`workers`: connections authorising in parallel, one per `subscribers_per_worker` subscribers (the
        feed's own connection is the first; the others open when needed)."""
        self.feed = ChangeFeed(database_url, publication, max_messages=max_messages)
        self.conn = self.feed.conn
        self.poll_interval = poll_interval
        self.subscribers: list[Subscriber] = []
        self._database_url = database_url
        self._workers = max(1, workers)
        self._per_worker = max(1, subscribers_per_worker)
        self.last_poll_changes = 0
        self._lanes = [_Authoriser(self.conn)]
        self._pool: ThreadPoolExecutor | None = None
        self._column_lists: dict[tuple[Relation, tuple[str, ...]], tuple[tuple[tuple[str, str], ...], ...]] = {}

    def subscribe(self, who: str | uuid.UUID | None = None, *, claims: dict[str, Any] | None = None,
                  tables: Sequence[str] | None = None, event: str = "*", filter: str | None = None,
                  schema: str = "public") -> Subscriber:
        """Subscribe a user (UUID, email, 'anon' or 'service_role'), or explicit JWT `claims`.

        `tables`: published tables (default: all of them); `event`: INSERT, UPDATE, DELETE, TRUNCATE or *;
        `filter`: Supabase's column filter, e.g. 'session_id=eq.<uuid>' (needs exactly one table).
        """
        if claims is not None:
            role, name = str(claims.get("role")), str(claims.get("email") or claims.get("sub") or "")
        elif who is not None:
            role, claims = resolve_user(self.conn, who)
            name = str(who)
        else:
            raise KitError("subscribe needs a user (UUID, email, 'anon', 'service_role') or claims")
        if role not in API_ROLES:
            raise KitError(f"role {role!r} is not one of Supabase's API roles {', '.join(API_ROLES)}")
        events = self._events(event)
        published = self._published_tables()
        for table in tables or ():
            if (schema, table) not in published:
                raise KitError(f"table {schema}.{table} is not in publication {self.feed.publication!r}: "
                               f"published are {', '.join(sorted(t for _, t in published))}")
        bound = self._filter(schema, tables, filter) if filter else None
        subscriptions = tuple(Subscription(schema, table, events, bound) for table in (tables or [None]))
        subscriber = Subscriber(name, role, claims, subscriptions)
        self.subscribers.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.remove(subscriber)

    def _events(self, event: str) -> frozenset[str]:
        event = event.upper()
        if event == "*":
            return frozenset(EVENT_TYPES)
        if event not in EVENT_TYPES:
            raise KitError(f"unknown event {event!r}: use one of {', '.join(EVENT_TYPES)} or *")
        return frozenset([event])

    def _published_tables(self) -> set[tuple[str, str]]:
        rows = self.conn.execute("select schemaname, tablename from pg_publication_tables where pubname = %s",
                                 [self.feed.publication]).fetchall()
        return set(rows)

    def _filter(self, schema: str, tables: Sequence[str] | None, text: str) -> Filter:
        match = _FILTER.match(text.strip())
        if not match:
            raise KitError(f"filter {text!r} is not column=operator.value (operators: eq, neq, lt, lte, gt, gte, "
                           "in), e.g. session_id=eq.5e000000-0000-4000-8000-000000000001")
        if not tables or len(tables) != 1:
            raise KitError("a filter needs exactly one table")
        column, operator, raw = match.groups()
        row = self.conn.execute("""
            select a.atttypid, format_type(a.atttypid, a.atttypmod), t.typcategory
            from pg_attribute a join pg_type t on t.oid = a.atttypid
            where a.attrelid = %s::regclass and a.attname = %s and a.attnum > 0 and not a.attisdropped
        """, [sql.Identifier(schema, tables[0]).as_string(self.conn), column]).fetchone()
        if row is None:
            raise KitError(f"filter column {column!r} is not a column of {schema}.{tables[0]}")
        type_oid, type_sql, category = row
        if operator in ("lt", "lte", "gt", "gte") and category == "S":
            raise KitError(f"filter {text!r}: ordering text depends on the collation; use eq, neq or in")
        texts = [v.strip().strip('"') for v in raw.strip("()").split(",")] if operator == "in" else [raw]
        cast = sql.SQL("select %s::text::{}::text").format(sql.SQL(type_sql))
        try:  # through the server, so a bad value fails now with PostgreSQL's message, not mid-stream
            canonical = [self.conn.execute(cast, [value]).fetchone()[0] for value in texts]
        except psycopg.DataError as error:
            raise KitError(f"filter {text!r}: {str(error).splitlines()[0]}") from None
        loader = (self.conn.adapters.get_loader(type_oid, Format.TEXT)
                  or self.conn.adapters.get_loader(0, Format.TEXT))(type_oid, self.conn)
        values = tuple(loader.load(value.encode()) for value in canonical)
        return Filter(column, operator, values)

    # -- polling --

    def poll(self) -> dict[Subscriber, list[Event]]:
        """Read what was committed since the last poll; return each subscriber's events, in commit order."""
        changes = self.feed.poll()
        self.last_poll_changes = len(changes)
        if not changes or not self.subscribers:
            return {}
        return self._deliver(changes)

    def stream(self, seconds: float | None = None) -> Iterator[tuple[Subscriber, Event]]:
        """Poll every `poll_interval`, or at once again after a poll that found changes (under load a poll
        takes longer than the interval, and waiting would only add latency), for `seconds` or until closed.

        The last poll starts after the deadline, so every change committed before it is delivered.
        """
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            started = time.monotonic()
            for subscriber, events in self.poll().items():
                for event in events:
                    yield subscriber, event
            if deadline is not None and started >= deadline:
                return
            pause = 0.0 if self.last_poll_changes else self.poll_interval - (time.monotonic() - started)
            if deadline is not None:
                pause = min(pause, deadline - time.monotonic())
            if pause > 0:
                time.sleep(pause)

    def _deliver(self, changes: list[Change]) -> dict[Subscriber, list[Event]]:
        subscribers = sorted(self.subscribers, key=lambda s: s.role)  # a role switch costs a re-plan
        roles = sorted({s.role for s in subscribers})
        groups: dict[tuple[Subscription, ...], int] = {}
        member_group = [groups.setdefault(s.subscriptions, len(groups)) for s in subscribers]
        group_list = list(groups)
        # Only tables someone subscribed to are authorised (and read).
        oids = sorted({c.relation.oid for c in changes
                       if any(s.covers(c.relation, c.type) for g in group_list for s in g)})
        values = [self.feed.values(change) for change in changes]
        lanes = self._lanes_for(len(subscribers))
        shares = [list(range(len(subscribers)))[i::len(lanes)] for i in range(len(lanes))]
        delivered: dict[int, dict[int, Event]] = defaultdict(dict)  # subscriber -> position -> event
        for first in range(0, len(oids), TABLES_PER_CALL):
            chunk = oids[first:first + TABLES_PER_CALL]
            for _attempt in range(3):
                functions = [lane.function(chunk, roles) for lane in lanes]
                plans = functions[0].plans
                batch = self._batch(plans, group_list, changes, values)
                # Each lane built its function from the catalog; all must agree with the batch's plans.
                results = self._run_lanes(lanes, functions, batch, shares, subscribers, member_group) if all(
                    f.plans == plans for f in functions) else [None]
                if None not in results:
                    break
                for lane, function in zip(lanes, functions, strict=True):
                    lane.forget(function)  # the catalog changed since it was built
            else:
                raise KitError("the tables' policies keep changing: could not authorise the batch")
            allowed = [row for rows in results for row in rows]
            self._assemble(plans, batch, changes, values, subscribers, member_group, group_list, allowed,
                           delivered)
        return {subscribers[s]: [events[p] for p in sorted(events)] for s, events in sorted(delivered.items())}

    def _lanes_for(self, count: int) -> list[_Authoriser]:
        """One authorising connection per `subscribers_per_worker` subscribers, up to `workers`."""
        wanted = min(self._workers, max(1, -(-count // self._per_worker)))
        while len(self._lanes) < wanted:
            self._lanes.append(_Authoriser(connect(self._database_url)))
        if wanted > 1 and self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._workers - 1, thread_name_prefix="kit-realtime")
        return self._lanes[:wanted]

    def _run_lanes(self, lanes: list[_Authoriser], functions: list[_Function], batch: _Batch,
                   shares: list[list[int]], subscribers: list[Subscriber], member_group: list[int]
                   ) -> list[list[tuple[int, int, int, int]] | None]:
        if not batch.plans:
            return [[]]
        arguments = batch.arguments()
        for subscriber in subscribers:
            _claims_literal(subscriber)  # cached on the subscriber, before the threads read it
        jobs = [(lane, function, share) for lane, function, share in zip(lanes, functions, shares, strict=True)]
        if len(jobs) == 1:
            return [self._authorise(*jobs[0], arguments, subscribers, member_group)]
        assert self._pool is not None
        futures = [self._pool.submit(self._authorise, *job, arguments, subscribers, member_group) for job in jobs[1:]]
        first = self._authorise(*jobs[0], arguments, subscribers, member_group)
        return [first, *(future.result() for future in futures)]

    def _batch(self, plans: list[_TablePlan], groups: list[tuple[Subscription, ...]], changes: list[Change],
               values: list[tuple[dict[str, Any], dict[str, Any]]]) -> _Batch:
        batch = _Batch(plans, len(groups))
        table_of = {plan.oid: t for t, plan in enumerate(plans)}
        for position, change in enumerate(changes):
            t = table_of.get(change.relation.oid)
            if t is None:  # the table is gone: nobody can be authorised for it
                continue
            plan, relation = plans[t], change.relation
            key = self._key(plan, change)
            old_row = self._old_row(plan, change)
            if old_row is not None:
                batch.rebuildable.add(position)
            new, old = values[position]
            for g, subscriptions in enumerate(groups):
                covering = [s for s in subscriptions if s.covers(relation, change.type)]
                if not covering:
                    continue
                row = old if change.type == "DELETE" else new
                if change.type in ("INSERT", "UPDATE") and key is not None and any(
                        s.filter is None or s.filter.matches(row) for s in covering):
                    batch.cover_row(t, g, key, position)
                    if old_row is not None:
                        batch.cover_old(t, g, old_row, position)
                elif change.type == "DELETE" and old_row is not None and any(
                        s.filter is None or s.filter.matches(old) for s in covering):
                    batch.cover_old(t, g, old_row, position)
        return batch

    @staticmethod
    def _key(plan: _TablePlan, change: Change) -> tuple[str | None, ...] | None:
        """The new row's primary key as text, or None when it cannot be looked up."""
        if not plan.key or change.new is None:
            return None
        row = dict(zip(change.relation.column_names, change.new, strict=True))
        if any(column not in row or row[column] is None or row[column] is UNCHANGED_TOAST for column in plan.key):
            return None
        return tuple(_text(row[column]) for column in plan.key)

    @staticmethod
    def _old_row(plan: _TablePlan, change: Change) -> list[str | None] | None:
        """The old row as text in the table's column order, if pgoutput sent all of it (REPLICA IDENTITY FULL)."""
        if change.old is None or not change.old_is_full:
            return None
        row = dict(zip(change.relation.column_names, change.old, strict=True))
        if any(name not in row or row[name] is UNCHANGED_TOAST for name, _ in plan.columns):
            return None
        return [_text(row[name]) for name, _ in plan.columns]

    @staticmethod
    def _authorise(lane: _Authoriser, function: _Function, share: list[int], arguments: list[Any],
                   subscribers: list[Subscriber], member_group: list[int]) -> list[tuple[int, int, int, int]] | None:
        """Run the function for a share of the subscribers; on an error, once per subscriber to isolate it."""
        types = ["text[]", "text[]", "int[]"] + ["text[]", "text[]", "bool[]", "text[]", "bool[]"] * len(function.plans)
        call = sql.SQL("select * from pg_temp.{}({})").format(
            sql.Identifier(function.name), sql.SQL(", ").join(sql.SQL("%s::" + t) for t in types))

        def run(indexes: list[int]) -> list[tuple[int, int, int, int]]:
            # The claims go as one ready array literal: escaping 500 JWTs again at every poll costs more
            # than the poll's queries.
            claims = "{" + ",".join(_claims_literal(subscribers[i]) for i in indexes) + "}"
            roles = [subscribers[i].role for i in indexes]
            groups = [member_group[i] + 1 for i in indexes]
            with lane.conn.transaction():
                rows = lane.conn.execute(call, [claims, roles, groups, *arguments]).fetchall()
            return [(indexes[s - 1] if s > 0 else s, kind, t, n) for s, kind, t, n in rows]

        try:
            rows = run(share)
        except psycopg.OperationalError as error:
            raise _lost(error) from None
        except psycopg.Error as error:
            rows, failed = [], []
            for i in share:
                try:
                    rows += run([i])
                except psycopg.OperationalError as lost:
                    raise _lost(lost) from None
                except psycopg.Error:  # an error is no permission: that subscriber receives nothing
                    failed.append(subscribers[i].name)
            log.warning("realtime: %d subscriber(s) receive nothing of this batch (%s): %s", len(failed),
                        ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else ""), one_line(error))
        if any(s < 0 for s, _, _, _ in rows):
            return None
        return rows

    def _assemble(self, plans: list[_TablePlan], batch: _Batch, changes: list[Change],
                  values: list[tuple[dict[str, Any], dict[str, Any]]], subscribers: list[Subscriber],
                  member_group: list[int], groups: list[tuple[Subscription, ...]],
                  allowed: list[tuple[int, int, int, int]], delivered: dict[int, dict[int, Event]]) -> None:
        """Add to `delivered` each subscriber's events of these tables, from what the function allowed."""
        rows_seen: dict[int, set[int]] = defaultdict(set)  # subscriber -> positions whose current row it reads
        olds_seen: dict[int, set[int]] = defaultdict(set)  # subscriber -> positions whose old row it reads
        for s, kind, t, n in allowed:
            if kind == 0:
                rows_seen[s].update(batch.covered_keys[t][member_group[s]][n])
            else:
                olds_seen[s].add(batch.old_positions[t][n - 1])
        table_of = {plan.oid: t for t, plan in enumerate(plans)}
        fallback = self._fallback(plans, table_of, groups, changes, values)
        for s, subscriber in enumerate(subscribers):
            positions = rows_seen[s] | {p for p in olds_seen[s] if changes[p].type == "DELETE"}
            for position, change_type in fallback[member_group[s]]:
                access = plans[table_of[changes[position].relation.oid]].access[subscriber.role]
                if (change_type == "TRUNCATE" and access.table_select) or (
                        change_type == "DELETE" and access.key_select
                        and (access.predicate is None or position not in batch.rebuildable)):
                    positions.add(position)
            for position in positions:
                change = changes[position]
                plan = plans[table_of[change.relation.oid]]
                delivered[s][position] = self._event(change, values[position], plan, plan.access[subscriber.role],
                                                     full_old=position in olds_seen[s])

    def _fallback(self, plans: list[_TablePlan], table_of: dict[int, int], groups: list[tuple[Subscription, ...]],
                  changes: list[Change], values: list[tuple[dict[str, Any], dict[str, Any]]]
                  ) -> list[list[tuple[int, str]]]:
        """Per group, the TRUNCATEs and DELETEs decided by privilege alone (Supabase's behaviour for DELETE).

        A filter on a column the fallback does not send (anything but the primary key) is not applied, as in
        Supabase: applying it would tell a subscriber something about a row it may not read.
        """
        result: list[list[tuple[int, str]]] = [[] for _ in groups]
        for position, change in enumerate(changes):
            if change.type not in ("DELETE", "TRUNCATE") or change.relation.oid not in table_of:
                continue
            key = plans[table_of[change.relation.oid]].key
            for g, subscriptions in enumerate(groups):
                if any(s.covers(change.relation, change.type) and (
                        change.type == "TRUNCATE" or s.filter is None or s.filter.column not in key
                        or s.filter.matches(values[position][1])) for s in subscriptions):
                    result[g].append((position, change.type))
        return result

    def _event(self, change: Change, values: tuple[dict[str, Any], dict[str, Any]], plan: _TablePlan,
               access: _Access, *, full_old: bool) -> Event:
        relation, (new, old) = change.relation, values
        visible = set(access.visible)
        if change.type == "TRUNCATE":
            record, old_record, columns = {}, {}, []
        else:
            record = {k: v for k, v in new.items() if k in visible}
            if full_old:
                old_record = {k: v for k, v in old.items() if k in visible}
            elif change.type == "INSERT":
                old_record = {}
            else:  # the primary key only, from the old row or (unchanged key) the new one
                old_record = {k: old.get(k, new.get(k)) for k in plan.key if k in visible}
            columns = [dict(column) for column in self._columns(relation, access.visible)]
        return Event(schema=relation.schema, table=relation.name, type=change.type,
                     commit_timestamp=change.commit_timestamp, record=record, old_record=old_record,
                     columns=columns)

    def _columns(self, relation: Relation, visible: tuple[str, ...]) -> tuple[tuple[tuple[str, str], ...], ...]:
        """The `columns` of an event: name and type of each column the subscriber may select (cached)."""
        key = (relation, visible)
        if key not in self._column_lists:
            self._column_lists[key] = tuple((("name", c.name), ("type", self.feed.type_name(c.type_oid)))
                                            for c in relation.columns if c.name in visible)
        return self._column_lists[key]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        for lane in self._lanes[1:]:
            lane.conn.close()
        self.feed.close()

    def __enter__(self) -> Realtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- what the command line calls ------------------------------------------------------------------------------


def listen(who: str | uuid.UUID, *, database_url: str | None = None, tables: Sequence[str] = (),
           event: str = "*", filter: str | None = None, seconds: float | None = None,
           publication: str = PUBLICATION, poll_interval: float = POLL_INTERVAL,
           on_listening: Callable[[], None] | None = None) -> Iterator[Event]:
    """The events `who` may see, as they are committed, for `seconds` (or until the caller stops iterating).

    The slot is created before the first event and dropped when the generator ends, however it ends;
    `on_listening` is called once it exists and the subscription is in place.
    """
    with Realtime(database_url, publication, poll_interval=poll_interval) as realtime:
        realtime.subscribe(who, tables=list(tables) or None, event=event, filter=filter)
        if on_listening is not None:
            on_listening()
        for _subscriber, item in realtime.stream(seconds):
            yield item


def render_event(event: Event, output_format: str = "jsonl") -> str:
    """One line: the event as JSON ('jsonl'), or a short human line ('table')."""
    if output_format == "jsonl":
        return json.dumps(event, default=_json_default)
    row = event["record"] or event["old_record"]
    shown = " ".join(f"{k}={_json_default(v) if not isinstance(v, str) else v}" for k, v in row.items())
    return (f"{event['commit_timestamp'].astimezone(timezone.utc):%H:%M:%S.%f}"[:-3]
            + f"  {event['type']:<8}  {event['schema']}.{event['table']}  {shown}").rstrip()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if value is UNCHANGED_TOAST:
        return "(unchanged TOAST value)"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=_json_default)
    return str(value)
