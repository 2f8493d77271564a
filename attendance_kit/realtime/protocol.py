"""Supabase Realtime's wire format (Phoenix channels), both serializers: the frames, nothing of what they mean.

`vsn=1.0.0` (the Python client's): JSON objects `{"topic", "event", "payload", "ref"}`; the server always writes
`ref` (null for a push) and never `join_ref`. `vsn=2.0.0` (realtime-js's default): JSON arrays
`[join_ref, ref, topic, event, payload]`, pushes carrying the join's `join_ref` except `postgres_changes` and
broadcasts (`[null, null, ...]`). Values JSON cannot take (an event's UUIDs, times) are written as `to_jsonb`
writes them. Refs are echoed exactly as received. Under 2.0.0 realtime-js sends each broadcast as a binary frame
("user broadcast push", kind 3: the lengths of its join_ref, ref, topic, event and metadata, the payload's encoding,
then each of them and the payload); one with a JSON payload is read as the `broadcast` message it stands for. Other
binary frames (a binary payload, which JSON frames cannot carry on) are `BadFrame`, which the gateway ignores as
Supabase does a malformed frame. The kit writes every frame as JSON text, which realtime-js reads too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .wire import wire_json

VERSIONS = ("1.0.0", "2.0.0")


class BadFrame(ValueError):
    """A frame that is not a message of this serializer."""


@dataclass(frozen=True)
class Message:
    topic: str
    event: str
    payload: Any
    ref: str | None = None
    join_ref: str | None = None


def version(requested: str | None) -> str:
    """The serializer for a connection's `vsn` (none: 1.0.0); any 2.x is 2.0.0's, anything else 1.0.0's."""
    return "2.0.0" if requested and requested.split(".")[0] == "2" else "1.0.0"


def decode(frame: str | bytes, vsn: str) -> Message:
    if isinstance(frame, bytes):
        if vsn != "2.0.0":
            raise BadFrame("binary frames are not decoded")
        return _user_broadcast_push(frame)
    try:
        data = json.loads(frame, parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise BadFrame("not JSON") from None
    if vsn == "2.0.0":
        if not (isinstance(data, list) and len(data) == 5):
            raise BadFrame("not [join_ref, ref, topic, event, payload]")
        join_ref, ref, topic, event, payload = data
    else:
        if not (isinstance(data, dict) and {"topic", "event", "payload"} <= data.keys()):
            raise BadFrame("not {topic, event, payload, ref}")
        topic, event, payload, ref, join_ref = (data["topic"], data["event"], data["payload"], data.get("ref"),
                                                data.get("join_ref"))
    if not isinstance(topic, str) or not isinstance(event, str):
        raise BadFrame("topic and event must be strings")
    return Message(topic, event, payload, ref, join_ref)


def encode(message: Message, vsn: str) -> str:
    """ASCII JSON, so a lone surrogate a client sent (which JSON allows) still encodes for the others."""
    if vsn == "2.0.0":
        return wire_json([message.join_ref, message.ref, message.topic, message.event, message.payload])
    return wire_json({"topic": message.topic, "event": message.event, "payload": message.payload,
                      "ref": message.ref})


def change_frame(topic: str, ids: list[int], data: str, vsn: str) -> str:
    """A `postgres_changes` push, its `data` already JSON: a change is written once for all who receive it alike,
    not once per frame. The same text `encode` writes."""
    return push_frame(topic, "postgres_changes", f'{{"ids":{wire_json(ids)},"data":{data}}}', vsn)


def push_frame(topic: str, event: str, payload: str, vsn: str) -> str:
    """A push without refs (`postgres_changes`, a broadcast), its payload already JSON."""
    if vsn == "2.0.0":
        return f'[null,null,{wire_json(topic)},{wire_json(event)},{payload}]'
    return f'{{"topic":{wire_json(topic)},"event":{wire_json(event)},"payload":{payload},"ref":null}}'


def _user_broadcast_push(frame: bytes) -> Message:
    """A kind-3 frame: realtime-js's broadcast under 2.0.0."""
    if len(frame) < 7 or frame[0] != 3:
        raise BadFrame("not a user broadcast push (binary kind 3)")
    sizes, encoding, position, fields = frame[1:6], frame[6], 7, []
    for size in sizes:
        fields.append(frame[position:position + size])
        position += size
    if position > len(frame) or encoding != 1:
        raise BadFrame("a user broadcast push too short, or with a binary payload")
    try:
        join_ref, ref, topic, event, _metadata = (field.decode() for field in fields)
        payload = json.loads(frame[position:], parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadFrame("a user broadcast push that is not UTF-8 and JSON") from None
    return Message(topic, "broadcast", {"type": "broadcast", "event": event, "payload": payload}, ref or None,
                   join_ref or None)


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")  # Python takes NaN and Infinity; JavaScript's JSON.parse does not


def reply(to: Message, status: str, response: Any) -> Message:
    """`phx_reply` to a client's message, its refs echoed."""
    return Message(to.topic, "phx_reply", {"status": status, "response": response}, to.ref, to.join_ref)
