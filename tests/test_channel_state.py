"""The gateway's channel state machine, with no network, no thread and no clock: messages, the database worker's
answers and expiries in; messages, database commands and expiry timers out (channel_state.py), and the fan-out of a
poll's deliveries (fanout.py)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from attendance_kit.realtime import protocol
from attendance_kit.realtime.broadcasts import Broadcast
from attendance_kit.realtime.channel_model import (
    Channel,
    CheckPolicies,
    Client,
    CountIn,
    CountOut,
    DatabaseUnavailable,
    Output,
    Subscribe,
    Unsubscribe,
)
from attendance_kit.realtime.channel_state import ChannelState
from attendance_kit.realtime.fanout import broadcast_frames, change_frames
from attendance_kit.realtime.protocol import Message
from attendance_kit.realtime.subscriptions import ChannelRefused, Delivered
from attendance_kit.realtime.tokens import sign
from attendance_kit.realtime.topic_policies import Allowed

SECRET = "a-test-secret-of-at-least-thirty-two-characters"
NOW = 2_000_000_000.0  # the state machine's clock is whatever it is told
SESSION = uuid.UUID("6a2f0d4e-0c1b-4d8e-9f3a-2b7c5e1d9a04")
LOBBY = f"realtime:session:{SESSION}:lobby"
ENTRY = {"event": "*", "schema": "public", "table": "attendance_records"}


def token(sub: str = "ada", expires_in: float = 60, secret: str = SECRET) -> str:
    return sign({"role": "authenticated", "sub": sub, "exp": int(NOW + expires_in)}, secret)


def join(topic: str, ref: str = "1", payload: Any = None) -> Message:
    return Message(topic, "phx_join", {} if payload is None else payload, ref, ref)


def changes(*entries: Any) -> dict[str, Any]:
    return {"config": {"postgres_changes": list(entries)}}


def sent(out: Output, client: Client | None = None) -> list[Message]:
    return [message for to, message in out.messages if client is None or to is client]


@pytest.fixture
def state() -> ChannelState:
    return ChannelState(SECRET)


@pytest.fixture
def ada(state: ChannelState) -> Client:
    return state.connect(token("ada"), "1.0.0")


def joined(state: ChannelState, client: Client, topic: str = "realtime:room", payload: Any = None,
           ref: str = "1") -> Channel:
    state.receive(client, join(topic, ref, payload), NOW)
    return client.channels[topic]


def test_a_join_is_answered_with_its_entries_ids_then_subscribed_and_counted(state: ChannelState,
                                                                             ada: Client) -> None:
    out = state.receive(ada, join(LOBBY, "7", changes(ENTRY)), NOW)
    channel = ada.channels[LOBBY]
    (answer,) = sent(out)
    assert answer == Message(LOBBY, "phx_reply", {"status": "ok", "response": {
        "postgres_changes": [{**ENTRY, "id": channel.ids[0]}]}}, "7", "7")
    assert channel.ids[0] > 0 and channel.claims["sub"] == "ada" and channel.token == ada.token
    assert out.commands == [CountIn(channel, SESSION, "lobby"), Subscribe(channel, channel.claims, [ENTRY], True)]
    assert out.expiries == [(channel, NOW + 60)]

    subscribed = state.subscription_done(out.commands[1], None)
    assert subscribed.messages == [(ada, Message(LOBBY, "system", {
        "extension": "postgres_changes", "status": "ok", "message": "Subscribed to PostgreSQL",
        "channel": f"session:{SESSION}:lobby"}, None, "7"))]
    assert subscribed.commands == [] and subscribed.expiries == []


def test_a_topic_of_no_session_is_not_counted_and_a_join_without_entries_subscribes_nothing(
        state: ChannelState, ada: Client) -> None:
    out = state.receive(ada, join("realtime:room"), NOW)
    assert sent(out)[0].payload == {"status": "ok", "response": {"postgres_changes": []}}
    assert out.commands == []


def test_a_join_with_a_bad_token_is_refused_with_supabase_s_reason(state: ChannelState, ada: Client) -> None:
    expired = state.receive(ada, join("realtime:a", payload={"access_token": token(expires_in=-10)}), NOW)
    forged = state.receive(ada, join("realtime:b", payload={"access_token": token(secret="x" * 32)}), NOW)
    assert [m.payload for m in sent(expired) + sent(forged)] == [
        {"status": "error", "response": {"reason": "InvalidJWTToken: Token has expired 10 seconds ago"}},
        {"status": "error", "response": {"reason": "JwtSignatureError: Failed to validate JWT signature"}}]
    assert ada.channels == {} and state.topics.channels == {}
    assert expired.commands == [] and expired.expiries == []


def test_the_join_s_own_token_counts_unless_it_is_a_project_key(state: ChannelState, ada: Client) -> None:
    assert joined(state, ada, "realtime:a", {"access_token": token("sam")}).claims["sub"] == "sam"
    assert joined(state, ada, "realtime:b", {"user_token": token("tess")}).claims["sub"] == "tess"
    assert joined(state, ada, "realtime:c", {"access_token": "sb_publishable_x"}).claims["sub"] == "ada"


def test_a_join_payload_of_the_wrong_shape_counts_as_empty(state: ChannelState, ada: Client) -> None:
    for n, payload in enumerate([[], "s", {"config": []}, {"config": {"postgres_changes": 5, "broadcast": 1}}]):
        channel = joined(state, ada, f"realtime:odd{n}", payload)
        assert (channel.entries, channel.broadcast_self, channel.broadcast_ack) == ([], False, False)


def test_unmatched_and_empty_topics_are_refused_and_the_socket_goes_on(state: ChannelState, ada: Client) -> None:
    answers = [sent(state.receive(ada, message, NOW))[0].payload for message in (
        join("room"),  # not a realtime: topic
        join("realtime:"),
        Message("realtime:never-joined", "broadcast", {}, "3"),
        Message("realtime:never-joined", "phx_leave", {}, "4"))]
    assert answers == [{"status": "error", "response": {"reason": "unmatched topic"}},
                       {"status": "error", "response": {"reason": "TopicNameRequired: You must provide a topic name"}},
                       {"status": "error", "response": {"reason": "unmatched topic"}},
                       {"status": "ok", "response": {}}]
    assert ada.channels == {}


def test_joining_again_closes_the_first_channel_and_replaces_it(state: ChannelState, ada: Client) -> None:
    first = joined(state, ada, LOBBY, changes(ENTRY), ref="1")
    out = state.receive(ada, join(LOBBY, "2", changes(ENTRY)), NOW)
    second = ada.channels[LOBBY]
    assert second is not first and not first.open and state.topics.channels[LOBBY] == {second}
    assert [(m.event, m.ref, m.join_ref) for m in sent(out)] == [("phx_close", "1", "1"), ("phx_reply", "2", "2")]
    assert out.commands == [Unsubscribe(first), CountOut(first, SESSION, "lobby"), CountIn(second, SESSION, "lobby"),
                            Subscribe(second, second.claims, [ENTRY], True)]
    assert out.expiries == [(first, None), (second, NOW + 60)]


def test_a_socket_may_join_so_many_channels(ada: Client) -> None:
    state = ChannelState(SECRET, max_channels=2)
    for topic in ("realtime:a", "realtime:b"):
        joined(state, ada, topic)
    out = state.receive(ada, join("realtime:c"), NOW)
    assert sent(out)[0].payload == {"status": "error", "response": {
        "reason": "ChannelRateLimitReached: Too many channels"}}
    assert sorted(ada.channels) == ["realtime:a", "realtime:b"]
    joined(state, ada, "realtime:a", ref="2")  # joining again is a replacement, not one more
    assert sorted(ada.channels) == ["realtime:a", "realtime:b"]


def test_a_heartbeat_is_answered_and_nothing_else_of_phoenix(state: ChannelState, ada: Client) -> None:
    out = state.receive(ada, Message("phoenix", "heartbeat", {}, "5"), NOW)
    assert out.messages == [(ada, Message("phoenix", "phx_reply", {"status": "ok", "response": {}}, "5"))]
    assert state.receive(ada, Message("phoenix", "something", {}, "6"), NOW) == Output()


def test_a_leave_is_answered_then_the_channel_closed_unsubscribed_and_counted_out(state: ChannelState,
                                                                                  ada: Client) -> None:
    channel = joined(state, ada, LOBBY, changes(ENTRY), ref="1")
    out = state.receive(ada, Message(LOBBY, "phx_leave", {}, "2", "1"), NOW)
    assert sent(out) == [Message(LOBBY, "phx_reply", {"status": "ok", "response": {}}, "2", "1"),
                         Message(LOBBY, "phx_close", {}, "1", "1")]
    assert out.commands == [Unsubscribe(channel), CountOut(channel, SESSION, "lobby")]
    assert out.expiries == [(channel, None)]
    assert ada.channels == {} and state.topics.channels == {} and not channel.open


def test_a_refreshed_token_resubscribes_with_its_claims_and_moves_the_expiry(state: ChannelState,
                                                                             ada: Client) -> None:
    channel = joined(state, ada, LOBBY, changes(ENTRY))
    same = state.receive(ada, Message(LOBBY, "access_token", {"access_token": channel.token}), NOW)
    key = state.receive(ada, Message(LOBBY, "access_token", {"access_token": "sb_secret_x"}), NOW)
    none = state.receive(ada, Message(LOBBY, "access_token", ["not", "an", "object"]), NOW)
    assert same == key == none == Output()

    sams = token("sam", expires_in=600)
    out = state.receive(ada, Message(LOBBY, "access_token", {"access_token": sams}), NOW)
    assert out.messages == [] and channel.token == sams and channel.claims["sub"] == "sam"
    assert out.commands == [Subscribe(channel, channel.claims, [ENTRY], False)]
    assert out.expiries == [(channel, NOW + 600)]
    assert state.subscription_done(out.commands[0], None) == Output()  # a refresh is not announced


def test_an_invalid_refreshed_token_shuts_the_channel_down(state: ChannelState, ada: Client) -> None:
    channel = joined(state, ada, "realtime:room", ref="1")
    out = state.receive(ada, Message("realtime:room", "access_token", {"access_token": "garbage"}), NOW)
    assert sent(out) == [Message("realtime:room", "system", {
        "extension": "system", "status": "error", "message": "The token provided is not a valid JWT",
        "channel": "room"}, None, "1"), Message("realtime:room", "phx_close", {}, "1", "1")]
    assert not channel.open and ada.channels == {}


def test_a_refused_or_failed_subscription_is_said_as_supabase_s_system_error(state: ChannelState,
                                                                             ada: Client) -> None:
    channel = joined(state, ada, "realtime:room", changes({"table": "nope"}), ref="1")
    command = Subscribe(channel, channel.claims, channel.entries, True)
    refused = state.subscription_done(command, ChannelRefused("Unable to subscribe to changes"))
    failed = state.subscription_done(command, RuntimeError("connection lost\nDETAIL: the server went away"))
    assert [m.payload for m in sent(refused) + sent(failed)] == [
        {"extension": "postgres_changes", "status": "error", "message": "Unable to subscribe to changes",
         "channel": "room"},
        {"extension": "postgres_changes", "status": "error", "message": "connection lost; DETAIL: the server went away",
         "channel": "room"}]
    assert channel.open  # the channel stays, as in Supabase: it just receives no changes

    state.receive(ada, Message("realtime:room", "phx_leave", {}, "2"), NOW)
    assert state.subscription_done(command, None) == Output()  # closed meanwhile: nobody to tell


def test_an_expired_token_shuts_its_channel_down_once(state: ChannelState, ada: Client) -> None:
    channel = joined(state, ada, LOBBY, changes(ENTRY), ref="3")
    out = state.expire(channel, NOW + 65)
    assert sent(out) == [Message(LOBBY, "system", {
        "extension": "system", "status": "error", "message": "Token has expired 5 seconds ago",
        "channel": f"session:{SESSION}:lobby"}, None, "3"), Message(LOBBY, "phx_close", {}, "3", "3")]
    assert out.commands == [Unsubscribe(channel), CountOut(channel, SESSION, "lobby")]
    assert state.expire(channel, NOW + 70) == Output()


def test_a_broadcast_reaches_the_topic_s_others_the_sender_with_self_and_an_ack(state: ChannelState,
                                                                                ada: Client) -> None:
    sam, olive = state.connect(token("sam"), "2.0.0"), state.connect(token("olive"), "1.0.0")
    joined(state, ada, "realtime:room", {"config": {"broadcast": {"self": True, "ack": True}}})
    joined(state, sam, "realtime:room")
    joined(state, olive, "realtime:elsewhere")
    wave = {"type": "broadcast", "event": "wave", "payload": {"n": 1}}

    loud = state.receive(ada, Message("realtime:room", "broadcast", wave, "2", "1"), NOW)
    pushed = Message("realtime:room", "broadcast", wave)  # no refs: a push
    assert sent(loud, ada) == [pushed, Message("realtime:room", "phx_reply", {"status": "ok", "response": {}},
                                               "2", "1")]
    assert sent(loud, sam) == [pushed] and sent(loud, olive) == []

    quiet = state.receive(sam, Message("realtime:room", "broadcast", wave, "3", "1"), NOW)
    assert quiet.messages == [(ada, pushed)]  # without `self` not to himself, without `ack` no reply


def test_a_flood_shuts_every_channel_of_the_socket_down(state: ChannelState, ada: Client) -> None:
    joined(state, ada, "realtime:a", ref="1")
    joined(state, ada, LOBBY, ref="2")
    out = state.flooded(ada)
    assert [(m.topic, m.event, m.payload.get("message")) for m in sent(out)] == [
        ("realtime:a", "system", "Too many messages per second"), ("realtime:a", "phx_close", None),
        (LOBBY, "system", "Too many messages per second"), (LOBBY, "phx_close", None)]
    assert ada.channels == {} and state.topics.channels == {}


def test_a_socket_that_ends_drops_its_channels_without_a_word(state: ChannelState, ada: Client) -> None:
    sam = state.connect(token("sam"), "1.0.0")
    channel = joined(state, ada, LOBBY, changes(ENTRY))
    others = joined(state, sam, LOBBY)
    out = state.disconnect(ada)
    assert out.messages == [] and out.commands == [Unsubscribe(channel), CountOut(channel, SESSION, "lobby")]
    assert state.topics.channels == {LOBBY: {others}}


def test_the_fan_out_writes_a_frame_per_channel_per_change_with_the_ids_of_the_entries_it_answers() -> None:
    state = ChannelState(SECRET)
    ada, sam = state.connect(token("ada"), "1.0.0"), state.connect(token("sam"), "2.0.0")
    both = changes(ENTRY, {**ENTRY, "event": "INSERT"})
    ada_lobby, sam_lobby = joined(state, ada, LOBBY, both), joined(state, sam, LOBBY, both)
    gone = joined(state, sam, "realtime:gone", changes(ENTRY))
    state.receive(sam, Message("realtime:gone", "phx_leave", {}, "9"), NOW)
    event = {"type": "INSERT", "table": "attendance_records", "record": {"id": uuid.UUID(int=1)}}
    frames = list(change_frames([(ada_lobby, [Delivered(event, (0, 1))]), (sam_lobby, [Delivered(event, (1,))]),
                                 (gone, [Delivered(event, (0,))])]))
    assert [client for client, _ in frames] == [ada, sam]  # the closed channel receives nothing
    assert json.loads(frames[0][1]) == {"topic": LOBBY, "event": "postgres_changes", "ref": None, "payload": {
        "ids": ada_lobby.ids, "data": {**event, "record": {"id": str(uuid.UUID(int=1))}}}}
    assert frames[1][1] == protocol.encode(Message(LOBBY, "postgres_changes", {"ids": [sam_lobby.ids[1]],
                                                                              "data": event}), "2.0.0")


# --- private channels, broadcast from the database, presence --------------------------------------------------

LECTURE = f"realtime:session:{SESSION}:lecture"
PRIVATE = {"config": {"private": "true", "presence": {"enabled": True}}}  # Supabase takes string booleans too
UNAUTHORIZED = f"Unauthorized: You do not have permissions to read from this Channel topic: session:{SESSION}:lecture"


def allowed(read: dict[str, bool] | None = None, write: dict[str, bool] | None = None) -> Allowed:
    return Allowed(read or {}, write or {})


def private_join(state: ChannelState, client: Client, read: dict[str, bool], payload: Any = PRIVATE,
                 ref: str = "1") -> tuple[Output, Output]:
    """A private join and the answer to its policy check: (what the join did, what the answer did)."""
    asked = state.receive(client, join(LECTURE, ref, payload), NOW)
    (command,) = asked.commands
    return asked, state.policies_checked(command, allowed(read), None)


def test_a_private_join_waits_for_its_read_policies_then_joins_with_the_presence_state(
        state: ChannelState, ada: Client) -> None:
    asked, answered = private_join(state, ada, {"broadcast": True, "presence": True}, ref="4")
    assert asked.messages == [] and asked.expiries == []  # no answer before the policies
    channel = ada.channels[LECTURE]
    assert asked.commands == [CheckPolicies(channel, channel.claims, "join", read=("broadcast", "presence"))]
    assert sent(answered) == [
        Message(LECTURE, "phx_reply", {"status": "ok", "response": {"postgres_changes": []}}, "4", "4"),
        Message(LECTURE, "presence_state", {}, None, "4")]
    assert answered.commands == [CountIn(channel, SESSION, "lecture")]
    assert channel.private and channel.read == {"broadcast": True, "presence": True}
    without_presence = state.receive(ada, join("realtime:other", "5", {"config": {"private": True}}), NOW)
    assert without_presence.commands[0].read == ("broadcast",)  # presence read is asked only when enabled


def test_a_private_join_that_may_read_nothing_or_whose_policy_raised_is_refused_with_supabase_s_reason(
        state: ChannelState, ada: Client) -> None:
    _, refused = private_join(state, ada, {"broadcast": False, "presence": False})
    asked = state.receive(ada, join(LECTURE, "2", PRIVATE), NOW)
    failed = state.policies_checked(asked.commands[0], None, RuntimeError("division by zero"))
    for out in (refused, failed):
        (answer,) = sent(out)
        assert answer.payload == {"status": "error", "response": {"reason": UNAUTHORIZED}} and out.commands == []
    assert ada.channels == {} and ada.joining == {} and state.topics.channels == {}


def test_a_private_join_left_or_replaced_before_its_answer_is_not_joined(state: ChannelState, ada: Client) -> None:
    first = state.receive(ada, join(LECTURE, "1", PRIVATE), NOW)
    state.receive(ada, Message(LECTURE, "phx_leave", {}, "2", "1"), NOW)
    assert state.policies_checked(first.commands[0], allowed({"broadcast": True}), None) == Output()
    second = state.receive(ada, join(LECTURE, "3", PRIVATE), NOW)
    third = state.receive(ada, join(LECTURE, "4", PRIVATE), NOW)  # replaces the second, still unanswered
    assert state.policies_checked(second.commands[0], allowed({"broadcast": True}), None) == Output()
    assert sent(state.policies_checked(third.commands[0], allowed({"broadcast": True}), None))[0].ref == "4"


def test_a_refreshed_token_asks_the_policies_again_and_a_lost_read_shuts_the_channel_down(
        state: ChannelState, ada: Client) -> None:
    private_join(state, ada, {"broadcast": True, "presence": True})
    channel = ada.channels[LECTURE]
    out = state.receive(ada, Message(LECTURE, "access_token", {"access_token": token("tess")}), NOW)
    (check,) = out.commands
    assert (check.purpose, check.claims["sub"]) == ("refresh", "tess")
    assert state.policies_checked(check, allowed({"broadcast": True, "presence": True}), None) == Output()

    channel.write = {"broadcast": True}
    kept = state.receive(ada, Message(LECTURE, "access_token", {"access_token": token("sam")}), NOW)
    state.policies_checked(kept.commands[0], allowed({"broadcast": True, "presence": True}), None)
    assert channel.open and channel.write == {}  # writes are asked again at the next broadcast or track

    lost_one = state.receive(ada, Message(LECTURE, "access_token", {"access_token": token("olive")}), NOW)
    out = state.policies_checked(lost_one.commands[0], allowed({"broadcast": False, "presence": True}), None)
    assert [(m.event, m.payload.get("message")) for m in sent(out)] == [
        ("system", f"You no longer have permission to read from this Channel topic: session:{SESSION}:lecture"),
        ("phx_close", None)]

    private_join(state, ada, {"broadcast": True})
    lost_all = state.receive(ada, Message(LECTURE, "access_token", {"access_token": token("olive")}), NOW)
    out = state.policies_checked(lost_all.commands[0], allowed({"broadcast": False}), None)
    assert sent(out)[0].payload == {"extension": "system", "status": "error", "channel": f"session:{SESSION}:lecture",
                                    "message": f"You do not have permissions to read from this Channel topic: "
                                               f"session:{SESSION}:lecture"}


def test_a_private_broadcast_waits_for_the_write_check_once_and_is_dropped_silently_if_refused(
        state: ChannelState) -> None:
    ada, sam = state.connect(token("ada"), "1.0.0"), state.connect(token("sam"), "2.0.0")
    ack = {"config": {"private": True, "broadcast": {"ack": True}}}
    private_join(state, ada, {"broadcast": True}, ack)
    private_join(state, sam, {"broadcast": True}, ack)
    wave = {"type": "broadcast", "event": "wave", "payload": {}}
    first = state.receive(sam, Message(LECTURE, "broadcast", wave, "2", "1"), NOW)
    second = state.receive(sam, Message(LECTURE, "broadcast", wave, "3", "1"), NOW)
    (check,) = first.commands
    assert (check.purpose, check.write) == ("write", ("broadcast", "presence")) and second == Output()
    refused = state.policies_checked(check, allowed(write={"broadcast": False, "presence": False}), None)
    assert refused == Output()  # neither delivered nor answered, even with `ack`
    assert state.receive(sam, Message(LECTURE, "broadcast", wave, "4", "1"), NOW) == Output()  # cached

    allowed_out = state.receive(ada, Message(LECTURE, "broadcast", wave, "2", "1"), NOW)
    sent_out = state.policies_checked(allowed_out.commands[0], allowed(write={"broadcast": True}), None)
    assert sent_out.messages == [(sam, Message(LECTURE, "broadcast", wave)),
                                 (ada, Message(LECTURE, "phx_reply", {"status": "ok", "response": {}}, "2", "1"))]


def test_presence_diffs_reach_those_who_may_read_presence_and_a_refused_track_is_an_error(
        state: ChannelState) -> None:
    ada, sam, tess = (state.connect(token(who), "1.0.0") for who in ("ada", "sam", "tess"))
    private_join(state, ada, {"broadcast": True, "presence": True})
    private_join(state, sam, {"broadcast": False, "presence": True})
    private_join(state, tess, {"broadcast": True, "presence": False})
    track = Message(LECTURE, "presence", {"type": "presence", "event": "track", "payload": {"name": "Sam"}}, "2", "1")
    asked = state.receive(sam, track, NOW)
    (check,) = asked.commands
    out = state.policies_checked(check, allowed(write={"broadcast": False, "presence": True}), None)
    diffs = [(to, m) for to, m in out.messages if m.event == "presence_diff"]
    assert sorted(to.token for to, _ in diffs) == sorted([ada.token, sam.token])  # not Tess: no presence read
    (meta,) = diffs[0][1].payload["joins"][sam.channels[LECTURE].presence_key]["metas"]
    assert meta["name"] == "Sam" and (sam, reply_ok(track)) in out.messages

    tess_track = state.receive(tess, Message(LECTURE, "presence", track.payload, "2", "1"), NOW)
    refused = state.policies_checked(tess_track.commands[0], allowed({"presence": False}, {"presence": False}), None)
    assert refused.messages == [(tess, Message(LECTURE, "phx_reply", {"status": "error", "response": {}}, "2", "1"))]

    left = state.receive(sam, Message(LECTURE, "phx_leave", {}, "3", "1"), NOW)
    assert [(to, m.payload["leaves"]) for to, m in left.messages if m.event == "presence_diff"] == [
        (ada, {sam_key(meta, diffs): {"metas": [meta]}})]


def reply_ok(message: Message) -> Message:
    return Message(message.topic, "phx_reply", {"status": "ok", "response": {}}, message.ref, message.join_ref)


def sam_key(meta: dict[str, Any], diffs: list[tuple[Client, Message]]) -> str:
    return next(key for key, value in diffs[0][1].payload["joins"].items() if value["metas"] == [meta])


def test_the_presence_key_is_the_config_s_or_made_up(state: ChannelState, ada: Client) -> None:
    keyed = joined(state, ada, "realtime:a", {"config": {"presence": {"key": "ada", "enabled": "true"}}})
    made_up = joined(state, ada, "realtime:b", {"config": {"presence": {"key": ""}}})
    assert (keyed.presence_key, keyed.presence_enabled, made_up.presence_enabled) == ("ada", True, False)
    assert uuid.UUID(made_up.presence_key).version == 1  # Supabase's default: a UUID v1


def test_replication_ready_is_said_after_the_join(state: ChannelState, ada: Client) -> None:
    out = state.receive(ada, join("realtime:a", "1", {"config": {"broadcast": {"replication_ready": True}}}), NOW)
    assert [(m.event, m.payload.get("message")) for m in sent(out)] == [
        ("phx_reply", None), ("system", "Replication connection established")]


def test_a_database_broadcast_reaches_the_topic_s_channels_of_its_privacy_that_may_read_broadcasts() -> None:
    state = ChannelState(SECRET)
    ada, sam, olive = (state.connect(token(who), vsn) for who, vsn in (("ada", "2.0.0"), ("sam", "1.0.0"),
                                                                       ("olive", "1.0.0")))
    private_join(state, ada, {"broadcast": True})
    private_join(state, sam, {"broadcast": False, "presence": True})
    public = joined(state, olive, LECTURE)
    private_row = Broadcast("m1", f"session:{SESSION}:lecture", "INSERT", True, {"record": {"n": 1}, "id": "p1"})
    public_row = Broadcast("m2", f"session:{SESSION}:lecture", "wave", False, {"n": 2})
    elsewhere = Broadcast("m3", "session:other:lecture", "INSERT", True, {})
    reached = list(state.database_broadcasts([private_row, public_row, elsewhere]))
    assert reached == [(ada.channels[LECTURE], private_row), (public, public_row)]
    frames = list(broadcast_frames(iter(reached)))
    assert frames[0] == (ada, f'[null,null,"{LECTURE}","broadcast",{{"event":"INSERT","payload":{{"record":{{"n":1}},'
                              f'"id":"p1"}},"type":"broadcast","meta":{{"id":"m1"}}}}]')
    assert json.loads(frames[1][1]) == {"topic": LECTURE, "event": "broadcast", "ref": None, "payload": {
        "event": "wave", "payload": {"n": 2}, "type": "broadcast", "meta": {"id": "m2"}}}


# --- the database away and back ------------------------------------------------------------------------------

def test_a_lost_database_is_not_told_and_its_return_subscribes_and_counts_every_open_channel_again(
        state: ChannelState, ada: Client) -> None:
    with_changes = joined(state, ada, LOBBY, changes(ENTRY), ref="3")
    broadcast_only = joined(state, ada, "realtime:room", ref="4")
    state.feed_lost()  # said to nobody, as in Supabase

    sam = state.connect(token("sam"), "1.0.0")
    joining = state.receive(sam, join(LOBBY, "8", changes(ENTRY)), NOW)
    late = sam.channels[LOBBY]
    assert [m.event for m in sent(joining)] == ["phx_reply"]
    assert joining.commands == []  # neither counted nor subscribed while the database is away

    back = state.feed_back()
    assert sent(back) == []
    again = [CountIn(with_changes, SESSION, "lobby"), Subscribe(with_changes, with_changes.claims, [ENTRY], True),
             CountIn(late, SESSION, "lobby"), Subscribe(late, late.claims, [ENTRY], True)]
    assert len(back.commands) == len(again) and all(command in back.commands for command in again)
    resubscribed = state.subscription_done(again[1], None)
    assert [m.payload["message"] for m in sent(resubscribed)] == ["Subscribed to PostgreSQL"]
    assert broadcast_only.open


def test_commands_the_worker_could_not_run_are_left_to_the_return_of_the_database(
        state: ChannelState, ada: Client) -> None:
    out = state.receive(ada, join(LOBBY, "1", changes(ENTRY)), NOW)
    assert state.subscription_done(out.commands[1], DatabaseUnavailable()) == Output()  # no error: feed_back

    asked = state.receive(ada, join(LECTURE, "2", PRIVATE), NOW)
    (answer,) = sent(state.policies_checked(asked.commands[0], None, DatabaseUnavailable()))
    assert answer.payload == {"status": "error", "response": {
        "reason": "UnableToConnectToProject: Realtime was unable to connect to the project database"}}
    assert LECTURE not in ada.channels and ada.joining == {}


def test_a_write_check_the_database_could_not_answer_is_asked_again(state: ChannelState) -> None:
    sam = state.connect(token("sam"), "1.0.0")
    private_join(state, sam, {"broadcast": True, "presence": True})
    wave = {"type": "broadcast", "event": "wave", "payload": {}}
    track = {"type": "presence", "event": "track", "payload": {"online_at": 1}}
    asked = state.receive(sam, Message(LECTURE, "broadcast", wave, "2", "1"), NOW)
    state.receive(sam, Message(LECTURE, "presence", track, "3", "1"), NOW)
    unanswered = state.policies_checked(asked.commands[0], None, DatabaseUnavailable())
    assert sent(unanswered) == [Message(LECTURE, "phx_reply", {"status": "error", "response": {}}, "3", "1")]
    again = state.receive(sam, Message(LECTURE, "broadcast", wave, "4", "1"), NOW)
    assert [command.purpose for command in again.commands] == ["write"]  # not cached as a denial


def waiting(*entries: Any, **options: Any) -> dict[str, Any]:
    return {"config": {"postgres_changes": list(entries), "postgres_changes_options": {"wait": True, **options}}}


def test_a_join_that_asks_to_wait_is_answered_once_subscribed_then_said_subscribed(state: ChannelState,
                                                                                   ada: Client) -> None:
    out = state.receive(ada, join(LOBBY, "3", waiting(ENTRY)), NOW)
    (channel,) = ada.joining.values()
    assert sent(out) == [] and LOBBY not in ada.channels
    assert out.commands == [Subscribe(channel, channel.claims, [ENTRY], True)]
    assert out.expiries == [(channel, NOW + 15)]  # Supabase's default wait
    out = state.subscription_done(out.commands[0], None)
    assert [m.event for m in sent(out)] == ["phx_reply", "system"]
    assert sent(out)[0].payload["status"] == "ok" and sent(out)[1].payload["message"] == "Subscribed to PostgreSQL"
    assert out.commands == [CountIn(channel, SESSION, "lobby")]  # counted, not subscribed twice
    assert ada.channels[LOBBY] is channel and not ada.joining
    assert state.expire(channel, NOW + 60).messages != []  # its timer is now the token's: expired, shut down


def test_a_waiting_join_is_refused_with_supabase_s_reasons(state: ChannelState, ada: Client) -> None:
    out = state.receive(ada, join("realtime:a", "1", waiting(ENTRY, timeout=60_000)), NOW)
    assert out.expiries[0][1] == NOW + 20  # the server's most
    out = state.subscription_done(out.commands[0], ChannelRefused("Unable to subscribe to changes with ..."))
    assert sent(out)[0].payload == {"status": "error", "response": {
        "reason": "RealtimeDisabledForConfiguration: Unable to subscribe to changes with ..."}}
    state.feed_lost()
    out = state.receive(ada, join("realtime:b", "2", waiting(ENTRY, timeout=500)), NOW)
    (channel,) = ada.joining.values()
    assert out.commands == []  # the database is away: asked when it is back, if in time
    assert state.expire(channel, NOW + 0.5).messages[0][1].payload == {"status": "error", "response": {
        "reason": "PostgresChangesSubscribeTimeout: Timed out after 500ms waiting for the postgres_changes "
                  "subscription"}}
    assert not ada.joining and "realtime:b" not in ada.channels


def test_a_waiting_join_is_subscribed_when_the_database_is_back(state: ChannelState, ada: Client) -> None:
    state.feed_lost()
    state.receive(ada, join("realtime:c", "1", waiting(ENTRY)), NOW)
    (channel,) = ada.joining.values()
    out = state.feed_back()
    assert out.commands == [Subscribe(channel, channel.claims, [ENTRY], True)]
    assert state.subscription_done(out.commands[0], DatabaseUnavailable()).messages == []  # still waiting
    assert sent(state.subscription_done(out.commands[0], None))[0].payload["status"] == "ok"


def test_wait_without_entries_or_false_answers_at_once(state: ChannelState, ada: Client) -> None:
    for payload in (waiting(), {"config": {"postgres_changes": [ENTRY],
                                           "postgres_changes_options": {"wait": "false"}}}):
        out = state.receive(ada, join(f"realtime:{len(ada.channels)}", "1", payload), NOW)
        assert sent(out)[0].payload["status"] == "ok"


def test_a_waiting_join_given_up_undoes_its_subscription(state: ChannelState, ada: Client) -> None:
    """Left, joined again or its socket gone while it waits: an Unsubscribe follows its Subscribe (the worker runs
    them in order), so no subscriber is left behind."""
    for leave in (lambda: state.receive(ada, Message("realtime:w", "phx_leave", {}, "2", "1"), NOW),
                  lambda: state.receive(ada, join("realtime:w", "3", changes(ENTRY)), NOW),
                  lambda: state.disconnect(ada)):
        out = state.receive(ada, join("realtime:w", "1", waiting(ENTRY)), NOW)
        (subscribe,) = out.commands
        undone = leave()
        assert Unsubscribe(subscribe.channel) in undone.commands and not subscribe.channel.open
        assert state.subscription_done(subscribe, None).messages == []  # its answer says nothing
        ada.channels.clear()


def test_a_wait_that_runs_out_while_its_subscription_is_made_is_decided_by_it(state: ChannelState,
                                                                             ada: Client) -> None:
    out = state.receive(ada, join("realtime:x", "1", waiting(ENTRY, timeout=-5)), NOW)  # Supabase tries once
    (subscribe,) = out.commands
    assert state.expire(subscribe.channel, NOW).messages == []
    assert sent(state.subscription_done(subscribe, None))[0].payload["status"] == "ok"
    out = state.receive(ada, join("realtime:y", "1", waiting(ENTRY, timeout="100")), NOW)  # a string, as Ecto
    (subscribe,) = out.commands
    assert out.expiries == [(subscribe.channel, NOW + 0.1)]
    state.expire(subscribe.channel, NOW + 0.1)
    assert sent(state.subscription_done(subscribe, DatabaseUnavailable()))[0].payload["response"]["reason"] == (
        "PostgresChangesSubscribeTimeout: Timed out after 100ms waiting for the postgres_changes subscription")
