"""Private channels (Realtime Authorization), Broadcast from Database and Presence through the gateway, with
Supabase's own clients (the Python `realtime`, and realtime-js for `vsn=2.0.0`) as its peers, on a real server.

The policies are sql/008's: on a session's `lecture` topic its teacher reads and sends broadcasts and presence,
its invited students only presence; its `status` topic is read by both, sent by the teacher; nobody else joins.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from realtime import AsyncRealtimeClient
from test_gateway import JS_DIR, check_in, eventually, free_port, open_lectures

from attendance_kit.demo import ADA, ENGINES_LECTURE, OLIVE, SAM, TESS
from attendance_kit.realtime.gateway import Gateway
from attendance_kit.realtime.tokens import token_for

LECTURE = f"session:{ENGINES_LECTURE}:lecture"
STATUS = f"session:{ENGINES_LECTURE}:status"
UNAUTHORIZED = f"Unauthorized: You do not have permissions to read from this Channel topic: {LECTURE}"


@pytest.fixture
def gateway(db_url: str) -> Iterator[Gateway]:
    with Gateway(db_url, port=free_port(), poll_interval=0.05) as running:
        yield running


class Member:
    """One Python client joined to one topic: the broadcasts, presence syncs, system messages and states it saw."""

    def __init__(self, gateway: Gateway, token: str, topic: str = LECTURE, *, private: bool = True,
                 presence: bool = False) -> None:
        self.client = AsyncRealtimeClient(gateway.url, token, auto_reconnect=False)
        self.channel = self.client.channel(topic, {"config": {
            "broadcast": {"ack": False, "self": False}, "presence": {"key": "", "enabled": False},
            "private": private}})
        self.broadcasts: list[dict[str, Any]] = []
        self.system: list[Any] = []
        self.states: list[tuple[str, str]] = []
        self.presence: list[dict[str, Any]] = []  # the presence state at each sync
        self.channel.on_broadcast("*", self.broadcasts.append)
        self.channel.on_system(self.system.append)
        if presence:
            self.channel.on_presence_sync(lambda: self.presence.append(dict(self.channel.presence_state())))

    async def join(self) -> str:
        """The client's first report: SUBSCRIBED, or CHANNEL_ERROR with the refusal."""
        await self.client.connect()
        await self.channel.subscribe(lambda state, error: self.states.append((state.value, str(error or ""))))
        await eventually(lambda: self.states)
        return self.states[0][0]

    def refusal(self) -> str:
        return json.loads(self.states[0][1])["reason"]


def test_a_private_lecture_topic_admits_its_teacher_and_students_and_its_broadcasts_reach_the_teacher_only(
        conn: psycopg.Connection, gateway: Gateway) -> None:
    open_lectures(conn)

    async def scenario() -> dict[str, Member]:
        members = {"ada": Member(gateway, token_for(conn, ADA.email)),
                   "tess": Member(gateway, token_for(conn, TESS.email), presence=True),  # presence read only
                   "olive": Member(gateway, token_for(conn, OLIVE.email), presence=True),
                   "public": Member(gateway, token_for(conn, OLIVE.email), private=False)}  # same name, public
        states = [await member.join() for member in members.values()]
        assert states == ["SUBSCRIBED", "SUBSCRIBED", "CHANNEL_ERROR", "SUBSCRIBED"]
        check_in(conn, SAM.email)
        await eventually(lambda: members["ada"].broadcasts)
        await asyncio.sleep(0.5)  # what else would arrive has had time to
        for member in members.values():
            await member.client.close()
        return members

    members = asyncio.run(scenario())
    assert members["olive"].refusal() == UNAUTHORIZED
    (check_in_broadcast,) = [b for b in members["ada"].broadcasts if b["payload"]["table"] == "attendance_records"]
    payload = check_in_broadcast["payload"]
    assert check_in_broadcast["event"] == "INSERT"
    assert (payload["operation"], payload["table"], payload["schema"]) == ("INSERT", "attendance_records", "public")
    assert payload["record"]["student_id"] == SAM.id and payload["old_record"] is None
    assert check_in_broadcast["meta"]["id"] and payload["id"]  # the message's id; send() adds one to the payload
    assert members["tess"].broadcasts == [] and members["public"].broadcasts == []  # a classmate's; not private


def test_presence_joins_and_leaves_and_client_broadcasts_need_the_write_policy(
        conn: psycopg.Connection, gateway: Gateway) -> None:
    open_lectures(conn)

    async def scenario() -> tuple[Member, list[Any], list[str], list[str]]:
        ada = Member(gateway, token_for(conn, ADA.email), presence=True)
        sam = Member(gateway, token_for(conn, SAM.email), presence=True)
        for member in (ada, sam):
            assert await member.join() == "SUBSCRIBED"
        await sam.channel.track({"name": "Sam"})
        await eventually(lambda: ada.presence and ada.presence[-1])
        joined = list(ada.presence[-1].values())
        await sam.channel.untrack()
        await eventually(lambda: ada.presence[-1] == {})
        # The status topic: Ada (its teacher) may send, Sam (invited) may only read.
        teacher = Member(gateway, token_for(conn, ADA.email), STATUS)
        student = Member(gateway, token_for(conn, SAM.email), STATUS)
        for member in (teacher, student):
            assert await member.join() == "SUBSCRIBED"
        await student.channel.send_broadcast("wave", {"from": "sam"})  # dropped without a word
        await teacher.channel.send_broadcast("wave", {"from": "ada"})
        await eventually(lambda: student.broadcasts)
        await asyncio.sleep(0.3)
        for member in (ada, sam, teacher, student):
            await member.client.close()
        return ada, joined, [m["payload"]["from"] for m in student.broadcasts], teacher.broadcasts

    ada, joined, student_heard, teacher_heard = asyncio.run(scenario())
    ((sam_meta,),) = joined
    assert sam_meta["name"] == "Sam"
    assert student_heard == ["ada"] and teacher_heard == []


def test_a_token_refreshed_to_another_user_is_checked_again(conn: psycopg.Connection, gateway: Gateway) -> None:
    open_lectures(conn)

    def ended(member: Member) -> list[Any]:
        return [b for b in member.broadcasts if b["payload"]["record"]["status"] == "ended"]

    async def scenario() -> tuple[Member, Member]:
        kept = Member(gateway, token_for(conn, SAM.email), STATUS)
        lost = Member(gateway, token_for(conn, ADA.email))
        for member in (kept, lost):
            assert await member.join() == "SUBSCRIBED"
        await kept.client.set_auth(token_for(conn, TESS.email))  # a classmate: still invited
        await lost.client.set_auth(token_for(conn, OLIVE.email))  # of another group: may not read
        await eventually(lambda: ("CLOSED", "") in lost.states)
        conn.execute("update live_sessions set status = 'ended' where id = %s", [ENGINES_LECTURE])
        await eventually(lambda: ended(kept))
        for member in (kept, lost):
            await member.client.close()
        return kept, lost

    kept, lost = asyncio.run(scenario())
    assert len(ended(kept)) == 1
    (error,) = [json.loads(error) for state, error in lost.states if state == "CHANNEL_ERROR"]
    assert error == {"extension": "system", "status": "error", "channel": LECTURE,
                     "message": f"You do not have permissions to read from this Channel topic: {LECTURE}"}


def test_a_policy_that_raises_for_one_user_refuses_only_that_user(conn: psycopg.Connection, gateway: Gateway) -> None:
    open_lectures(conn)
    conn.execute(f"""
        create function public.refuse_tess() returns boolean language plpgsql as $$
        begin
            if auth.uid() = '{TESS.id}' then raise exception 'this policy fails for Tess'; end if;
            return true;
        end $$;
        create policy "fails for Tess" on realtime.messages as restrictive for select to authenticated
        using (public.refuse_tess());
    """)

    async def scenario() -> tuple[Member, Member]:
        tess = Member(gateway, token_for(conn, TESS.email), STATUS)
        ada = Member(gateway, token_for(conn, ADA.email))
        assert [await tess.join(), await ada.join()] == ["CHANNEL_ERROR", "SUBSCRIBED"]
        check_in(conn, SAM.email)
        await eventually(lambda: ada.broadcasts)
        for member in (tess, ada):
            await member.client.close()
        return tess, ada

    tess, ada = asyncio.run(scenario())
    assert tess.refusal() == UNAUTHORIZED.replace(LECTURE, STATUS)
    assert ada.broadcasts[0]["payload"]["record"]["student_id"] == SAM.id


@pytest.mark.skipif(shutil.which("node") is None or not (JS_DIR / "node_modules" / ".installed").is_file(),
                    reason="needs Node.js and `npm install` in tests/js (./kit test does it where npm is)")
def test_supabase_s_javascript_client_on_a_private_lecture_topic(conn: psycopg.Connection, gateway: Gateway) -> None:
    """The issue's first "Done when", with realtime-js (`private: true`): Ada receives Sam's check-in broadcast from
    the database; Olive's join is refused with Supabase's message; Sam tracks presence and Ada's client syncs him;
    Sam does not receive Tess's check-in. And realtime-js's own broadcasts (binary frames under vsn 2.0.0): Ada's,
    whom the write policy lets send, reach her (`self`); Sam's, whom it does not, reach nobody."""
    open_lectures(conn)

    def start(who: str, track: dict[str, Any] | None = None) -> subprocess.Popen[str]:
        send = {"event": "hello", "payload": {"from": who}}
        return subprocess.Popen(["node", "private.mjs", gateway.url, token_for(conn, who), LECTURE, "3",
                                 json.dumps(track) if track else "", json.dumps(send)], cwd=JS_DIR,
                                stdout=subprocess.PIPE, text=True)

    clients = {"ada": start(ADA.email), "sam": start(SAM.email, {"name": "Sam"}), "olive": start(OLIVE.email)}
    try:
        firsts = {who: json.loads(client.stdout.readline()) for who, client in clients.items()}
        assert firsts["ada"]["status"] == firsts["sam"]["status"] == "SUBSCRIBED"
        assert firsts["olive"] == {"status": "CHANNEL_ERROR", "error": UNAUTHORIZED}
        check_in(conn, SAM.email)
        check_in(conn, TESS.email)
        # Read on from the buffer readline() filled (communicate() would read past it); each ends by itself.
        seen = {who: [json.loads(line) for line in client.stdout.read().splitlines()]
                for who, client in clients.items()}
    finally:
        for client in clients.values():
            client.kill()
    ada_broadcasts = [line["broadcast"]["payload"]["record"]["student_id"] for line in seen["ada"]
                      if "broadcast" in line and line["broadcast"]["payload"].get("table") == "attendance_records"]
    assert sorted(ada_broadcasts) == sorted([SAM.id, TESS.id])
    assert any(meta["name"] == "Sam" for line in seen["ada"] if "presence" in line
               for metas in line["presence"].values() for meta in metas)
    assert {"track": "ok"} in seen["sam"] and not any("broadcast" in line for line in seen["sam"])
    hellos = [line["broadcast"]["payload"] for line in seen["ada"] if line.get("broadcast", {}).get("event") == "hello"]
    assert hellos == [{"from": ADA.email}]
    assert {line["broadcast"]["type"] for line in seen["ada"] if "broadcast" in line} == {"broadcast"}
