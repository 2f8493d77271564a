"""The gateway's channels as a state machine without I/O: what each message, database result and timer does.

Every input is a method call and every effect is returned in an `Output` (channel_model.py, with the clients,
channels and commands): the messages to send (to which client: a broadcast goes to other sockets), the commands for
the database worker and the channels' expiry timers to set or cancel. Time comes in as `now` (seconds since 1970),
so the whole protocol is tested with no network, no thread and no clock (tests/test_channel_state.py); gateway.py
does the sending, the waiting and the timing.

The inputs, each a method: a socket's `connect`, `disconnect` and `receive`d messages (`heartbeat`, `phx_join`,
`phx_leave`, `access_token`, `broadcast`, `presence`); the database worker's answers (`subscription_done`,
`policies_checked`: Realtime Authorization), its news (`feed_lost`, `feed_back`) and its `database_broadcasts`;
the timers' (`expire`) and the transport's (`flooded`).

Who is present is presence.py's, which channels a topic's messages reach topics.py's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from ..errors import KitError, one_line
from . import channels, presence
from .admission import Refusal, join_request, refreshed_token, reply_entries
from .broadcasts import Broadcast
from .channel_model import (
    UNAVAILABLE,
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
from .presence import Presence
from .protocol import Message, reply
from .tokens import TokenRefused, check_token
from .topic_policies import Allowed
from .topics import Topics

MAX_CHANNELS_PER_SOCKET = 100  # Supabase's max_channels_per_client


class ChannelState:
    """Every socket's channels, and which channels each topic has (for broadcasts)."""

    def __init__(self, jwt_secret: str, max_channels: int = MAX_CHANNELS_PER_SOCKET) -> None:
        self.jwt_secret = jwt_secret
        self.max_channels = max_channels
        self.topics = Topics()
        self.presence = Presence()
        self.database_up = True  # the database worker's news: feed_lost, feed_back
        # Joins whose reply waits for their subscription (`_admit`); of those, the ones whose Subscribe is still
        # out, and the ones whose wait ran out meanwhile (their answer decides).
        self.awaiting: set[Channel] = set()
        self.asking: set[Channel] = set()
        self.overdue: set[Channel] = set()

    def connect(self, token: str, vsn: str) -> Client:
        return Client(token, vsn)

    def disconnect(self, client: Client) -> Output:
        """The socket ended: its channels go, without a word (there is nobody to tell)."""
        out = Output()
        for channel in list(client.channels.values()):
            self._remove(channel, out)
        for channel in client.joining.values():
            self._abandon(channel, out)
        client.joining.clear()
        return out

    def receive(self, client: Client, message: Message, now: float) -> Output:
        out = Output()
        if message.topic == "phoenix":
            if message.event == "heartbeat":
                out.messages.append((client, reply(message, "ok", {})))
            return out
        if message.event == "phx_join":
            self._join(client, message, now, out)
            return out
        channel = client.channels.get(message.topic)
        if channel is None:
            status, response = ("ok", {}) if message.event == "phx_leave" else ("error", {"reason": "unmatched topic"})
            out.messages.append((client, reply(message, status, response)))
            if message.event == "phx_leave" and message.topic in client.joining:
                self._abandon(client.joining.pop(message.topic), out)
        elif message.event == "phx_leave":
            out.messages.append((client, reply(message, "ok", {})))
            self._close(channel, out)
        elif message.event == "access_token":
            self._refresh(channel, message, now, out)
        elif message.event == "broadcast":
            self._broadcast(channel, message, out)
        elif message.event == "presence":
            self._presence(channel, message, now, out)
        return out

    def subscription_done(self, command: Subscribe, error: Exception | None) -> Output:
        """Say so, or why not, as Supabase's system message (nothing to a channel closed meanwhile)."""
        out = Output()
        channel = command.channel
        if channel in self.awaiting:
            self.asking.discard(channel)
            self._awaited(channel, error, out)
            return out
        if not channel.open or isinstance(error, DatabaseUnavailable):  # feed_back subscribes it again
            return out
        if error is not None:  # ChannelRefused, with Supabase's message; else what went wrong
            self._system(channel, "postgres_changes", "error", _said(error), out)
        elif command.first:
            self._system(channel, "postgres_changes", "ok", "Subscribed to PostgreSQL", out)
        return out

    def policies_checked(self, command: CheckPolicies, allowed: Allowed | None, error: Exception | None) -> Output:
        """What the policies allow (`allowed`), or that asking failed (`error`: a policy raised, no permission; or
        `DatabaseUnavailable`), for the join, a refreshed token or the first broadcast or track."""
        out = Output()
        channel, unavailable = command.channel, isinstance(error, DatabaseUnavailable)
        read = {} if allowed is None else allowed.read
        if command.purpose == "join":
            if channel.client.joining.get(channel.topic) is channel:  # not left or replaced meanwhile
                del channel.client.joining[channel.topic]
                self._join_answered(channel, read, unavailable, out)
        elif channel.open and command.purpose == "refresh":
            self._refresh_answered(channel, read, unavailable, out)
        elif channel.open:
            self._writes_answered(channel, command, allowed, unavailable, out)
        return out

    def _join_answered(self, channel: Channel, read: dict[str, bool], unavailable: bool, out: Output) -> None:
        """Supabase's rule: a private channel joins if its user may read broadcasts or presence there."""
        if unavailable:
            self._refuse(channel, f"UnableToConnectToProject: {UNAVAILABLE}", out)
        elif any(read.values()):
            channel.read = dict(read)
            self._admit(channel, out)
        else:
            self._refuse(channel, "Unauthorized: You do not have permissions to read from this Channel topic: "
                                  f"{channel.sub_topic}", out)

    def _refresh_answered(self, channel: Channel, read: dict[str, bool], unavailable: bool, out: Output) -> None:
        """A refreshed token's reads: none, or one lost, shuts the channel down (Supabase's two messages); the
        writes are asked again at the next broadcast or track."""
        if unavailable:
            self._shut_down(channel, UNAVAILABLE, out)
        elif not any(read.values()):
            self._shut_down(channel, f"You do not have permissions to read from this Channel topic: "
                                     f"{channel.sub_topic}", out)
        elif any(allowed and not read.get(extension) for extension, allowed in channel.read.items()):
            self._shut_down(channel, f"You no longer have permission to read from this Channel topic: "
                                     f"{channel.sub_topic}", out)
        else:
            channel.read, channel.write = dict(read), {}

    def _writes_answered(self, channel: Channel, command: CheckPolicies, allowed: Allowed | None,
                         unavailable: bool, out: Output) -> None:
        """The write check, asked at the first broadcast or track and then kept: the waiting messages go through,
        or a broadcast is dropped silently and a track refused, as Supabase does. Unanswered (the database away),
        nothing is kept: it is asked again at the next one."""
        waiting, channel.waiting = channel.waiting, []
        if unavailable:
            for message in waiting:
                if message.event != "broadcast":
                    out.messages.append((channel.client, reply(message, "error", {})))
            return
        channel.write = {e: False for e in command.write} if allowed is None else dict(allowed.write)
        channel.read.update({} if allowed is None else allowed.read)
        for message in waiting:
            (self._broadcast if message.event == "broadcast" else self._track)(channel, message, out)

    def database_broadcasts(self, broadcasts: list[Broadcast]) -> Iterator[tuple[Channel, Broadcast]]:
        """Each committed message with each channel it reaches: joined to its topic, of its privacy, and (private)
        allowed to read broadcasts when it joined or last refreshed its token. In commit order per channel."""
        for broadcast in broadcasts:
            for channel in self.topics.database_broadcast(broadcast):
                yield channel, broadcast

    def expire(self, channel: Channel, now: float) -> Output:
        """Its token expired; or, for a join that waits for its subscription, the wait ran out."""
        out = Output()
        if channel in self.asking:  # as Supabase, the attempt under way decides
            self.overdue.add(channel)
        elif channel in self.awaiting:
            self._time_out(channel, out)
        elif channel.open:
            self._shut_down(channel, f"Token has expired {int(now - channel.expires_at)} seconds ago", out)
        return out

    def feed_lost(self) -> None:
        """The database went away: until `feed_back`, joins are neither subscribed nor counted. Nothing is said, as
        in Supabase: a system error would make Supabase's Python client rejoin, and the rejoin close its channel."""
        self.database_up = False

    def feed_back(self) -> Output:
        """The database is back (its counts taken back to none): every open channel is counted and subscribed
        again, checked again against the tables and their policies ("Subscribed to PostgreSQL" once more)."""
        out = Output()
        self.database_up = True
        for channel in self.topics.every_channel():
            self._subscribe_and_count(channel, out)
        for channel in self.awaiting - self.asking:
            self._ask(channel, out)
        return out

    def flooded(self, client: Client) -> Output:
        """Supabase's answer to a flood: each channel shut down with its message (the socket is closed after)."""
        out = Output()
        for channel in list(client.channels.values()):
            self._shut_down(channel, "Too many messages per second", out)
        return out

    # --- the transitions ------------------------------------------------------------------------------------

    def _join(self, client: Client, message: Message, now: float, out: Output) -> None:
        request = join_request(message)
        if isinstance(request, Refusal):
            out.messages.append((client, reply(message, "error", {"reason": request.reason})))
            return
        if request.topic in client.channels:  # joining again replaces the channel
            self._close(client.channels[request.topic], out)
        if request.topic in client.joining:
            self._abandon(client.joining.pop(request.topic), out)
        if len(client.channels) + len(client.joining) >= self.max_channels:
            out.messages.append((client, reply(message, "error", {
                "reason": "ChannelRateLimitReached: Too many channels"})))
            return
        token = request.access_token or client.token
        try:
            claims = check_token(token, self.jwt_secret, now)
        except TokenRefused as refused:
            out.messages.append((client, reply(message, "error", {"reason": refused.reason})))
            return
        channel = Channel(request.topic, request.join_ref, client, request.entries, request.ids, token, claims,
                          request.broadcast_self, request.broadcast_ack, request.private, request.presence_enabled,
                          request.presence_key or str(uuid.uuid1()), request.replication_ready, request.wait_ms,
                          join=message)
        if request.wait_ms is not None:
            channel.wait_until = now + request.wait_ms / 1000
        if not channel.private:
            self._admit(channel, out)
            return
        client.joining[channel.topic] = channel  # joined once its policies let it read
        out.commands.append(CheckPolicies(channel, claims, "join", read=channel.reads))

    def _admit(self, channel: Channel, out: Output) -> None:
        """Open the channel; one whose join asked to wait (`postgres_changes_options`), once its postgres_changes
        are subscribed, or refused when that fails or takes longer than it asked (a timer: `expire`)."""
        if channel.wait_ms is None:
            self._open(channel, out)
            return
        channel.client.joining[channel.topic] = channel
        self.awaiting.add(channel)
        out.expiries.append((channel, channel.wait_until))
        if self.database_up:  # else at feed_back, if in time
            self._ask(channel, out)

    def _ask(self, channel: Channel, out: Output) -> None:
        self.asking.add(channel)
        out.commands.append(Subscribe(channel, channel.claims, channel.entries, first=True))

    def _awaited(self, channel: Channel, error: Exception | None, out: Output) -> None:
        """A waiting join's subscription answered: the join's reply, Supabase's (while the database is away, none
        until it is back or the wait runs out)."""
        if isinstance(error, DatabaseUnavailable):
            if channel in self.overdue:
                self._time_out(channel, out)
            return
        self._stop_waiting(channel)
        del channel.client.joining[channel.topic]
        if error is not None:
            self._refuse(channel, f"RealtimeDisabledForConfiguration: {_said(error)}", out)
            return
        self._open(channel, out, subscribed=True)
        self._system(channel, "postgres_changes", "ok", "Subscribed to PostgreSQL", out)

    def _time_out(self, channel: Channel, out: Output) -> None:
        self._stop_waiting(channel)
        del channel.client.joining[channel.topic]
        self._refuse(channel, f"PostgresChangesSubscribeTimeout: Timed out after {channel.wait_ms}ms waiting for "
                              "the postgres_changes subscription", out)

    def _stop_waiting(self, channel: Channel) -> None:
        self.awaiting.discard(channel)
        self.asking.discard(channel)
        self.overdue.discard(channel)

    def _abandon(self, channel: Channel, out: Output) -> None:
        """A channel still joining is gone (left, joined again, its socket ended): whatever its Subscribe made is
        undone (the worker runs commands in order)."""
        channel.open = False
        if channel in self.awaiting:
            self._stop_waiting(channel)
            out.commands.append(Unsubscribe(channel))

    def _refuse(self, channel: Channel, reason: str, out: Output) -> None:
        channel.open = False
        out.messages.append((channel.client, reply(channel.join, "error", {"reason": reason})))

    def _open(self, channel: Channel, out: Output, subscribed: bool = False) -> None:
        """The join answered ok: the channel counts, subscribes (unless `subscribed` already), times out; with
        presence, its state follows."""
        channel.client.channels[channel.topic] = channel
        self.topics.add(channel)
        out.messages.append((channel.client, reply(channel.join, "ok", {
            "postgres_changes": reply_entries(channel.entries, channel.ids)})))
        channel.join = None
        out.expiries.append((channel, channel.expires_at))
        if self.database_up:  # else at feed_back
            self._subscribe_and_count(channel, out, subscribe=not subscribed)
        if channel.presence_enabled and channel.may_read("presence"):
            out.messages.append((channel.client, Message(channel.topic, "presence_state",
                                                         self.presence.state(channel.space), None, channel.join_ref)))
        if channel.replication_ready:  # the change feed's slot streams before any client joins
            self._system(channel, "system", "ok", "Replication connection established", out)

    def _subscribe_and_count(self, channel: Channel, out: Output, subscribe: bool = True) -> None:
        session_channel = channels.session_channel(channel.topic)
        if session_channel is not None:
            out.commands.append(CountIn(channel, *session_channel))
        if channel.entries and subscribe:
            out.commands.append(Subscribe(channel, channel.claims, channel.entries, first=True))

    def _refresh(self, channel: Channel, message: Message, now: float, out: Output) -> None:
        """A new token for the channel: later deliveries use its claims; an invalid one ends the channel."""
        token = refreshed_token(message)
        if token is None or token == channel.token:
            return
        try:
            claims = check_token(token, self.jwt_secret, now)
        except TokenRefused as refused:
            self._shut_down(channel, str(refused), out)
            return
        channel.token, channel.claims = token, claims
        out.expiries.append((channel, channel.expires_at))
        if channel.entries:
            out.commands.append(Subscribe(channel, claims, channel.entries, first=False))
        if channel.private:  # Supabase asks the policies again at each new token (never per message)
            out.commands.append(CheckPolicies(channel, claims, "refresh", read=channel.reads))

    def _writes_checked(self, channel: Channel, extension: str, message: Message, out: Output) -> bool:
        """Whether the channel's policies are known to let it write `extension`: public channels always; else
        the message waits for the check (asked once, for both extensions, as Supabase)."""
        if not channel.private or extension in channel.write:
            return True
        if not channel.waiting:
            reads = ("presence",) if extension == "presence" and "presence" not in channel.read else ()
            out.commands.append(CheckPolicies(channel, channel.claims, "write", read=reads,
                                              write=("broadcast", "presence")))
        channel.waiting.append(message)
        return False

    def _broadcast(self, channel: Channel, message: Message, out: Output) -> None:
        """To every channel of the topic and its privacy (the sender's too with `self`) that may read broadcasts;
        `ack` answers the sender. Refused by the write policy: dropped without a word, as Supabase does."""
        if not self._writes_checked(channel, "broadcast", message, out):
            return
        if channel.private and not channel.write.get("broadcast"):
            return
        for other in self.topics.broadcast_from(channel):
            out.messages.append((other.client, Message(channel.topic, "broadcast", message.payload)))
        if channel.broadcast_ack:
            out.messages.append((channel.client, reply(message, "ok", {})))

    def _presence(self, channel: Channel, message: Message, now: float, out: Output) -> None:
        """`track` / `untrack`, within Supabase's limits (presence.py reads the message)."""
        request = presence.read_request(message.payload, channel.presence_calls, now)
        if request.shut_down is not None:
            self._shut_down(channel, request.shut_down, out)
        elif request.action == "track":
            channel.presence_enabled = True  # a track turns presence on, as in Supabase
            if self._writes_checked(channel, "presence", message, out):
                self._track(channel, message, out)
        else:
            if request.action == "untrack":
                self._untrack(channel, out)
            out.messages.append((channel.client, reply(message, request.reply, request.response or {})))

    def _track(self, channel: Channel, message: Message, out: Output) -> None:
        """Tracked, with a diff to those who may see it; or refused by the write policy (an error reply)."""
        if channel.private and not channel.write.get("presence"):
            out.messages.append((channel.client, reply(message, "error", {})))
            return
        diff = self.presence.track(channel.space, channel, channel.presence_key, message.payload["payload"])
        out.messages.append((channel.client, reply(message, "ok", {})))
        self._send_diff(channel, diff, out)

    def _untrack(self, channel: Channel, out: Output) -> None:
        self._send_diff(channel, self.presence.untrack(channel.space, channel), out)

    def _send_diff(self, channel: Channel, diff: presence.Diff | None, out: Output) -> None:
        """`presence_diff` to the topic's channels of the same privacy that use presence and may read it."""
        if diff is None:
            return
        for other in self.topics.presence_diff_from(channel):
            out.messages.append((other.client, Message(channel.topic, "presence_diff", diff)))

    def _shut_down(self, channel: Channel, reason: str, out: Output) -> None:
        """Supabase's channel shutdown: a system error, then phx_close."""
        self._system(channel, "system", "error", reason, out)
        self._close(channel, out)

    def _close(self, channel: Channel, out: Output) -> None:
        """phx_close (its ref the join's), and the channel is gone."""
        out.messages.append((channel.client, Message(channel.topic, "phx_close", {}, channel.join_ref,
                                                     channel.join_ref)))
        self._remove(channel, out)

    def _remove(self, channel: Channel, out: Output) -> None:
        if not channel.open:
            return
        channel.open = False
        out.expiries.append((channel, None))
        if channel.client.channels.get(channel.topic) is channel:
            del channel.client.channels[channel.topic]
        self.topics.discard(channel)
        self._untrack(channel, out)  # its presence leaves, seen by the others
        if channel.entries:
            out.commands.append(Unsubscribe(channel))
        session_channel = channels.session_channel(channel.topic)
        if session_channel is not None:
            out.commands.append(CountOut(channel, *session_channel))

    def _system(self, channel: Channel, extension: str, status: str, text: str, out: Output) -> None:
        out.messages.append((channel.client, Message(channel.topic, "system", {
            "extension": extension, "status": status, "message": text,
            "channel": channel.sub_topic}, None, channel.join_ref)))


def _said(error: Exception) -> str:
    """An error as a message says it: the kit's own (Supabase's words, line breaks kept) whole; others in one line."""
    return str(error) if isinstance(error, KitError) else one_line(error)
