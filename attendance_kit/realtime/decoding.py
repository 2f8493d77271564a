"""Decoding: pgoutput protocol 1, from the slot's bytes to `Change`s.

Pure: bytes in, changes out, no database. Values stay as pgoutput sends them (text, as bytes); the change feed
turns them into Python values with psycopg's loaders (`feed._Types`), which need a connection.

A message starts with its kind: B Begin, R Relation, I Insert, U Update, D Delete, T Truncate, C Commit (Y Type,
O Origin and M logical message are read and ignored). Numbers are big-endian, strings NUL-terminated. A tuple
(a row) is a column count and, per column, 'n' (null), 'u' (a TOASTed value an UPDATE left unchanged, which the
WAL does not carry) or 't' with a length and the value's text.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

_POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class _UnchangedToast:
    """pgoutput's 'u': a large (TOASTed) value an UPDATE left unchanged, which the WAL does not carry."""

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


# In `record` where an UPDATE left a TOASTed value unchanged and the table does not log old rows
# (with REPLICA IDENTITY FULL the old row supplies the value instead).
UNCHANGED_TOAST = _UnchangedToast()

RawValue = bytes | None | _UnchangedToast


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

    @functools.cached_property
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


def as_text(value: RawValue) -> str | None:
    """A value's text as pgoutput sent it; None for a null or an unchanged TOAST value."""
    return None if value is None or value is UNCHANGED_TOAST else value.decode()


class PgOutputDecoder:
    """Turns pgoutput messages into `Change`s, a transaction at a time (at its Commit)."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self._pending: list[Change] = []
        self._timestamp = _POSTGRES_EPOCH
        self._xid = 0

    def decode(self, data: bytes) -> list[Change]:
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
        else:  # 'b' (binary) needs the `binary` option, which the change feed never asks for
            raise ValueError(f"unexpected pgoutput tuple value kind {kind!r}")
    return tuple(values), pos
