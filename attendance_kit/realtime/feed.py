"""The slot, or the change feed: `ChangeFeed` reads a temporary pgoutput slot by polling and hands out `Change`s.

The change feed is where the database meets the decoder: it owns the slot's connection, hands each message to
the pure `PgOutputDecoder`, and loads the decoded text values into Python values with psycopg's own loaders
(`_Types`), as if they had been selected. It speaks in `Change`s only; the `Event` a subscriber receives is
defined with the subscriptions (subscriptions.py), because deciding who receives what, and so what an event
holds, is their concern and delivery's, never the slot's.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

import psycopg
from psycopg.pq import Format

from ..connection import connect, require_logical_decoding
from ..errors import KitError, one_line
from .decoding import UNCHANGED_TOAST, Change, PgOutputDecoder, RawValue, Relation

PUBLICATION = "live_attendance_pub"
# Supabase Realtime polls its slot every 100 ms; here a poll that found changes is followed at once by the next.
POLL_INTERVAL = 0.1
# Bounds one poll's work. pgoutput only ends a poll between transactions, so a larger transaction still
# arrives whole.
MAX_MESSAGES_PER_POLL = 20_000


class FeedLost(KitError):
    """The change feed lost its database (a restart, `db reset`, a terminated connection): its temporary slot is gone,
    and with it whatever was committed until a new one exists. `Realtime.reconnect` makes the new one."""


class ChangeFeed:
    """A temporary pgoutput slot on the change feed's own connection, read by polling; closes with the connection."""

    def __init__(self, database_url: str | None = None, publication: str = PUBLICATION,
                 *, broadcasts: str | None = None, max_messages: int = MAX_MESSAGES_PER_POLL) -> None:
        """`broadcasts`: realtime.messages' publication, read on the same slot (Broadcast from Database)."""
        self.publication = publication
        self.publications = [publication] if broadcasts is None else [publication, broadcasts]
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
        for publication in self.publications:
            if self.conn.execute("select from pg_publication where pubname = %s", [publication]).fetchone() is None:
                raise KitError(f"no publication {publication!r} in this database: apply the migrations "
                               "({command}) or name an existing publication", command="migrate")

    def _quiet_server_log(self) -> None:
        """Every decoding call logs two LOG lines with their statement: polled several times a second, an idle
        listener wrote ~600 MB of server log a day. This connection logs only FATAL and worse, where its role may say
        so (a superuser, as in the kit's cluster); its errors still reach the kit as exceptions."""
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            self.conn.execute("set log_min_messages = fatal")

    def _create_slot(self) -> None:
        try:
            # temporary => true: the slot is this connection's and dies with it.
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
                [self.slot_name, self.max_messages, ",".join(map(_quoted_name, self.publications))],
            ).fetchall()
        except psycopg.OperationalError as error:
            raise lost("the change feed's connection", error) from None
        changes: list[Change] = []
        for (data,) in rows:
            changes.extend(self.decoder.decode(data))
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
        """Drop the slot and close the connection (closing it would drop the slot anyway)."""
        if self.conn.closed:
            return
        try:
            self.conn.execute("select pg_drop_replication_slot(%s)", [self.slot_name])
        except psycopg.Error:
            pass  # the connection is going away, and its temporary slot with it
        finally:
            self.conn.close()

    def __enter__(self) -> ChangeFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def lost(what: str, error: BaseException) -> FeedLost:
    return FeedLost(f"lost {what} ({one_line(error)}): changes committed until the feed reconnects are not "
                    "delivered (its temporary slot went with the connection)")


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
                self._load(column.type_oid, value))
        return row

    def _load(self, oid: int, value: bytes) -> Any:
        try:
            return self._loaders[oid].load(value)
        except psycopg.DataError:  # a value Python has no type for ('infinity' as a time): its text, as to_jsonb
            return value.decode()
