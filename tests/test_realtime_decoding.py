"""The pgoutput decoder on bytes built here, message by message as PostgreSQL's protocol documents them: no
database. (tests/test_realtime.py decodes what a real server sends.)"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import pytest

from attendance_kit import demo
from attendance_kit.realtime import UNCHANGED_TOAST, Change, Column, PgOutputDecoder, RawValue, Relation
from attendance_kit.realtime.decoding import as_text

RECORDS, CHANNELS = 16_524, 16_550  # relation oids
UUID, BOOL, TEXT, INT4 = 2950, 16, 25, 23  # type oids
SAM = demo.SAM.id.encode()
ENGINES = demo.ENGINES_LECTURE.encode()
COMMITTED = datetime(2026, 1, 12, 9, 0, 0, 123456, tzinfo=UTC)


def string(text: str) -> bytes:
    return text.encode() + b"\0"


def begin(xid: int, at: datetime = COMMITTED) -> bytes:
    """Final LSN, commit time (microseconds since 2000-01-01 UTC), xid."""
    micros = (at - datetime(2000, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return b"B" + struct.pack("!QqI", 0x16B3748, micros, xid)


def commit() -> bytes:
    """Flags, commit LSN, end LSN, commit time: the decoder needs none of them."""
    return b"C" + struct.pack("!bQQq", 0, 0x16B3748, 0x16B3778, 0)


def relation(oid: int, schema: str, name: str, identity: str, columns: list[tuple[bool, str, int, int]]) -> bytes:
    """Columns as (part of the replica identity, name, type oid, type modifier)."""
    body = struct.pack("!I", oid) + string(schema) + string(name) + identity.encode() + struct.pack("!H", len(columns))
    for in_identity, column, type_oid, modifier in columns:
        body += bytes([int(in_identity)]) + string(column) + struct.pack("!Ii", type_oid, modifier)
    return b"R" + body


def values(*row: RawValue) -> bytes:
    """TupleData: 'n' null, 'u' unchanged TOAST value, 't' text with its length."""
    data = struct.pack("!H", len(row))
    for value in row:
        if value is None:
            data += b"n"
        elif value is UNCHANGED_TOAST:
            data += b"u"
        else:
            data += b"t" + struct.pack("!I", len(value)) + value
    return data


def insert(oid: int, *new: RawValue) -> bytes:
    return b"I" + struct.pack("!I", oid) + b"N" + values(*new)


def update(oid: int, new: tuple[RawValue, ...], old: tuple[RawValue, ...] | None = None, *, full: bool = False
           ) -> bytes:
    before = b"" if old is None else (b"O" if full else b"K") + values(*old)
    return b"U" + struct.pack("!I", oid) + before + b"N" + values(*new)


def delete(oid: int, *old: RawValue, full: bool) -> bytes:
    return b"D" + struct.pack("!I", oid) + (b"O" if full else b"K") + values(*old)


def truncate(*oids: int) -> bytes:
    return b"T" + struct.pack("!Ib", len(oids), 0) + struct.pack(f"!{len(oids)}I", *oids)


RECORDS_FULL = relation(RECORDS, "public", "attendance_records", "f",
                        [(True, "id", UUID, -1), (True, "session_id", UUID, -1), (True, "student_id", UUID, -1),
                         (True, "status", BOOL, -1)])
CHANNELS_DEFAULT = relation(CHANNELS, "public", "websocket_channels", "d",
                            [(True, "id", INT4, -1), (False, "channel_name", TEXT, -1), (False, "metadata", TEXT, -1)])


def decode(decoder: PgOutputDecoder, *messages: bytes) -> list[list[Change]]:
    return [decoder.decode(message) for message in messages]


def test_a_relation_message_describes_the_table_and_its_columns() -> None:
    decoder = PgOutputDecoder()
    assert decoder.decode(relation(7, "", "varchar_table", "i", [(True, "code", 1043, 12), (False, "note", TEXT, -1)])
                        ) == []
    assert decoder.relations[7] == Relation(
        7, "pg_catalog", "varchar_table", "i",  # pgoutput sends an empty namespace for pg_catalog
        (Column("code", 1043, 12, True), Column("note", TEXT, -1, False)))
    assert decoder.relations[7].column_names == ("code", "note")


def test_a_transaction_arrives_whole_at_its_commit_in_order() -> None:
    decoder = PgOutputDecoder()
    returned = decode(decoder, begin(742), RECORDS_FULL, insert(RECORDS, b"r1", ENGINES, SAM, b"t"),
                      update(RECORDS, (b"r1", ENGINES, SAM, b"f"), (b"r1", ENGINES, SAM, b"t"), full=True),
                      delete(RECORDS, b"r1", ENGINES, SAM, b"f", full=True), commit())
    assert returned[:-1] == [[], [], [], [], []]  # nothing before the Commit
    records = decoder.relations[RECORDS]
    assert returned[-1] == [
        Change("INSERT", records, (b"r1", ENGINES, SAM, b"t"), None, False, COMMITTED, 742),
        Change("UPDATE", records, (b"r1", ENGINES, SAM, b"f"), (b"r1", ENGINES, SAM, b"t"), True, COMMITTED, 742),
        Change("DELETE", records, None, (b"r1", ENGINES, SAM, b"f"), True, COMMITTED, 742),
    ]
    # The next transaction starts empty and keeps the relations it was told of.
    changes = decode(decoder, begin(743), insert(RECORDS, b"r2", ENGINES, SAM, b"t"), commit())[-1]
    assert [(c.type, c.new[0], c.xid) for c in changes] == [("INSERT", b"r2", 743)]


def test_nulls_unchanged_toast_values_and_key_only_old_rows() -> None:
    decoder = PgOutputDecoder()
    big = "é" * 3000  # a value's text arrives as its UTF-8 bytes, whatever its length
    changes = decode(decoder, begin(9), CHANNELS_DEFAULT, insert(CHANNELS, b"1", big.encode(), None),
                     # An UPDATE that left the TOASTed value alone; the key changed, so the old key comes too.
                     update(CHANNELS, (b"2", b"renamed", UNCHANGED_TOAST), (b"1", None, None)),
                     update(CHANNELS, (b"2", b"again", UNCHANGED_TOAST)),  # key unchanged: no old row at all
                     delete(CHANNELS, b"2", None, None, full=False), commit())[-1]
    inserted, moved, renamed, deleted = changes
    assert inserted.new == (b"1", big.encode(), None) and inserted.old is None
    assert moved.new == (b"2", b"renamed", UNCHANGED_TOAST) and moved.new[2] is UNCHANGED_TOAST
    assert (moved.old, moved.old_is_full) == ((b"1", None, None), False)
    assert (renamed.new, renamed.old) == ((b"2", b"again", UNCHANGED_TOAST), None)
    assert (deleted.type, deleted.new, deleted.old, deleted.old_is_full) == ("DELETE", None, (b"2", None, None), False)
    assert [as_text(value) for value in (*inserted.new, UNCHANGED_TOAST)] == ["1", big, None, None]


def test_a_truncate_is_one_change_per_table() -> None:
    decoder = PgOutputDecoder()
    changes = decode(decoder, begin(12), RECORDS_FULL, CHANNELS_DEFAULT, truncate(RECORDS, CHANNELS), commit())[-1]
    assert [(c.type, c.relation.name, c.new, c.old) for c in changes] == [
        ("TRUNCATE", "attendance_records", None, None), ("TRUNCATE", "websocket_channels", None, None)]


def test_type_origin_and_logical_messages_are_read_past() -> None:
    decoder = PgOutputDecoder()
    type_message = b"Y" + struct.pack("!I", 16_600) + string("public") + string("mood")
    origin = b"O" + struct.pack("!Q", 0x16B3748) + string("kit_test_origin")
    message = b"M" + b"\x01" + struct.pack("!Q", 0x16B3748) + string("kit") + struct.pack("!I", 2) + b"hi"
    changes = decode(decoder, begin(20), origin, type_message, CHANNELS_DEFAULT, message,
                     insert(CHANNELS, b"5", b"x", None), commit())[-1]
    assert [(c.type, c.new) for c in changes] == [("INSERT", (b"5", b"x", None))]


def test_what_the_change_feed_never_asks_for_is_refused() -> None:
    decoder = PgOutputDecoder()
    decoder.decode(CHANNELS_DEFAULT)
    with pytest.raises(ValueError, match="unexpected pgoutput message b'S'"):  # streaming needs proto_version 2
        decoder.decode(b"S" + struct.pack("!Ib", 1, 1))
    binary = b"I" + struct.pack("!I", CHANNELS) + b"N" + struct.pack("!H", 1) + b"b" + struct.pack("!Ii", 4, 1)
    with pytest.raises(ValueError, match="tuple value kind b'b'"):  # needs the `binary` option
        decoder.decode(binary)
