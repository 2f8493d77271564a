"""Presence without I/O (presence.py): who is tracked under which key, the diffs each change makes, the state, and
how a `presence` message is read within Supabase's limits."""

from __future__ import annotations

from attendance_kit.realtime.presence import CLIENT_MAX_CALLS, CLIENT_WINDOW, MAX_PAYLOAD_BYTES, Presence, read_request

LECTURE = (True, "realtime:session:x:lecture")


def test_a_track_joins_a_changed_track_updates_and_an_untrack_leaves() -> None:
    presence = Presence()
    sam, tess = object(), object()
    joined = presence.track(LECTURE, sam, "sam-key", {"name": "Sam"})
    (meta,) = joined["joins"]["sam-key"]["metas"]
    assert joined["leaves"] == {} and meta["name"] == "Sam" and meta["phx_ref"]
    assert presence.track(LECTURE, sam, "sam-key", {"name": "Sam"}) is None  # the same payload: nothing changes

    updated = presence.track(LECTURE, sam, "sam-key", {"name": "Sam", "seat": 4})
    (new,) = updated["joins"]["sam-key"]["metas"]
    assert updated["leaves"] == {"sam-key": {"metas": [meta]}}
    assert new["phx_ref_prev"] == meta["phx_ref"] and new["phx_ref"] != meta["phx_ref"]

    presence.track(LECTURE, tess, "shared", {"name": "Tess"})
    presence.track((False, LECTURE[1]), object(), "public", {})  # the public channels of that name: apart
    assert list(presence.state(LECTURE)) == ["sam-key", "shared"]
    assert presence.untrack(LECTURE, sam) == {"joins": {}, "leaves": {"sam-key": {"metas": [new]}}}
    assert presence.untrack(LECTURE, sam) is None
    assert list(presence.state(LECTURE)) == ["shared"]


def test_channels_sharing_a_key_are_its_metas() -> None:
    presence = Presence()
    first, second = object(), object()
    presence.track(LECTURE, first, "ada", {"device": "laptop"})
    presence.track(LECTURE, second, "ada", {"device": "phone"})
    assert [m["device"] for m in presence.state(LECTURE)["ada"]["metas"]] == ["laptop", "phone"]


def test_a_presence_message_is_read_as_supabase_reads_it() -> None:
    calls: list[float] = []
    assert read_request({"type": "presence", "event": "TRACK", "payload": {"a": 1}}, calls, 0).action == "track"
    assert read_request({"event": "untrack"}, calls, 1).action == "untrack"
    no_event = read_request({"payload": {}}, calls, 2)
    assert (no_event.action, no_event.reply) == (None, "ok") and len(calls) == 2  # answered, not counted
    unknown = read_request({"event": "wave"}, calls, 3)
    assert (unknown.reply, unknown.response) == ("error", {})
    not_a_map = read_request({"event": "track", "payload": [1]}, [], 0)
    assert not_a_map.response == {"reason": "Presence track payload must be a map"}
    huge = read_request({"event": "track", "payload": {"x": "y" * MAX_PAYLOAD_BYTES}}, [], 0)
    assert huge.shut_down == "Track message size exceeded"


def test_more_than_five_presence_messages_in_thirty_seconds_shut_the_channel_down() -> None:
    calls: list[float] = []
    answers = [read_request({"event": "untrack"}, calls, second) for second in range(CLIENT_MAX_CALLS + 1)]
    assert [a.shut_down for a in answers] == [None] * CLIENT_MAX_CALLS + ["Client presence rate limit exceeded"]
    assert read_request({"event": "untrack"}, calls, CLIENT_WINDOW + 5.5).shut_down is None  # the window moved on
