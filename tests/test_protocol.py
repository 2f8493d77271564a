"""Supabase Realtime's frames (protocol.py), both serializers, with no network: what each writes and reads, and
what it refuses to read."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from attendance_kit.realtime import protocol
from attendance_kit.realtime.protocol import BadFrame, Message
from attendance_kit.realtime.wire import wire_json

JOIN = Message("realtime:room", "phx_join", {"config": {"broadcast": {"self": True}}}, "2", "1")


@pytest.mark.parametrize(("requested", "vsn"), [(None, "1.0.0"), ("", "1.0.0"), ("1.0.0", "1.0.0"),
                                                ("2.0.0", "2.0.0"), ("2.1", "2.0.0"), ("3.0.0", "1.0.0")])
def test_a_connection_s_vsn_picks_its_serializer(requested: str | None, vsn: str) -> None:
    assert protocol.version(requested) == vsn


def test_vsn_2_writes_and_reads_the_array_form_with_both_refs() -> None:
    frame = protocol.encode(JOIN, "2.0.0")
    assert frame == '["1","2","realtime:room","phx_join",{"config":{"broadcast":{"self":true}}}]'
    assert protocol.decode(frame, "2.0.0") == JOIN
    push = Message("realtime:room", "broadcast", {"n": 1})
    assert protocol.encode(push, "2.0.0") == '[null,null,"realtime:room","broadcast",{"n":1}]'
    assert protocol.decode(protocol.encode(push, "2.0.0"), "2.0.0") == push


def test_vsn_1_writes_an_object_with_ref_and_never_join_ref_but_reads_a_join_ref() -> None:
    frame = protocol.encode(JOIN, "1.0.0")
    assert json.loads(frame) == {"topic": "realtime:room", "event": "phx_join", "ref": "2",
                                 "payload": {"config": {"broadcast": {"self": True}}}}
    assert protocol.decode(frame, "1.0.0") == Message(JOIN.topic, JOIN.event, JOIN.payload, "2", None)
    sent = '{"topic": "realtime:room", "event": "phx_join", "payload": {}, "ref": "2", "join_ref": "1"}'
    assert protocol.decode(sent, "1.0.0") == Message("realtime:room", "phx_join", {}, "2", "1")
    assert protocol.decode('{"topic": "phoenix", "event": "heartbeat", "payload": {}}', "1.0.0").ref is None


@pytest.mark.parametrize("vsn", protocol.VERSIONS)
def test_a_reply_echoes_the_refs_and_every_frame_is_ascii(vsn: str) -> None:
    answer = protocol.reply(JOIN, "ok", {"text": "é \ud800"})  # a lone surrogate, as a client may send one
    assert answer == Message("realtime:room", "phx_reply", {"status": "ok", "response": {"text": "é \ud800"}},
                             "2", "1")
    frame = protocol.encode(answer, vsn)
    assert frame.isascii() and protocol.decode(frame, vsn).payload == answer.payload


@pytest.mark.parametrize(("frame", "vsn", "why"), [
    (b'{"topic": "t", "event": "e", "payload": {}}', "1.0.0", "binary frames are not decoded"),
    ("{", "1.0.0", "not JSON"),
    ('{"topic": "t", "event": "e", "payload": NaN}', "1.0.0", "not JSON"),  # JavaScript's JSON has no NaN
    ('{"topic": "t", "event": "e", "payload": Infinity}', "2.0.0", "not JSON"),
    ("[" * 100_000, "2.0.0", "not JSON"),  # too deep for the parser
    ('{"topic": "t", "event": "e", "payload": {}}', "2.0.0", "not [join_ref, ref, topic, event, payload]"),
    ('[null, null, "t", "e"]', "2.0.0", "not [join_ref, ref, topic, event, payload]"),
    ('[null, null, "t", "e", {}]', "1.0.0", "not {topic, event, payload, ref}"),
    ('{"topic": "t", "event": "e"}', "1.0.0", "not {topic, event, payload, ref}"),
    ('{"topic": 7, "event": "e", "payload": {}}', "1.0.0", "topic and event must be strings"),
    ('[null, null, "t", null, {}]', "2.0.0", "topic and event must be strings"),
])
def test_a_malformed_frame_is_a_bad_frame_saying_why(frame: str | bytes, vsn: str, why: str) -> None:
    with pytest.raises(BadFrame) as raised:
        protocol.decode(frame, vsn)
    assert str(raised.value) == why


def user_broadcast_push(join_ref: str, ref: str, topic: str, event: str, payload: bytes, encoding: int = 1) -> bytes:
    """A binary frame as realtime-js writes a broadcast under 2.0.0 (kind 3)."""
    fields = [field.encode() for field in (join_ref, ref, topic, event, "")]
    return bytes([3, *map(len, fields), encoding]) + b"".join(fields) + payload


def test_realtime_js_s_binary_broadcast_is_read_as_the_broadcast_it_stands_for() -> None:
    frame = user_broadcast_push("1", "2", "realtime:room", "wave", b'{"n": 1}')
    assert protocol.decode(frame, "2.0.0") == Message("realtime:room", "broadcast", {
        "type": "broadcast", "event": "wave", "payload": {"n": 1}}, "2", "1")
    assert protocol.decode(user_broadcast_push("", "", "realtime:room", "wave", b"{}"), "2.0.0").ref is None
    for bad in (user_broadcast_push("1", "2", "t", "e", b"\x00\x01", encoding=0), b"\x03\x05", b"\x04abc",
                user_broadcast_push("1", "2", "t", "e", b"NaN")):
        with pytest.raises(BadFrame):
            protocol.decode(bad, "2.0.0")


def test_a_change_written_once_is_the_frame_the_serializer_writes() -> None:
    event = {"schema": "public", "table": "t", "type": "INSERT", "commit_timestamp": "2026-12-05T10:00:00.123Z",
             "columns": [{"name": "id", "type": "uuid"}], "errors": None,
             "record": {"id": uuid.UUID(int=7), "at": datetime(2026, 12, 5, 10, tzinfo=UTC), "n": float("nan"),
                        "text": "é \u2028 \"quoted\""}}
    for vsn in protocol.VERSIONS:
        whole = protocol.encode(protocol.Message("realtime:x", "postgres_changes", {"ids": [3, 9], "data": event}),
                                vsn)
        assert protocol.change_frame("realtime:x", [3, 9], wire_json(event), vsn) == whole
        assert whole.isascii() and "NaN" not in whole.replace('"NaN"', "")
