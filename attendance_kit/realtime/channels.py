"""websocket_channels kept true by the gateway: each client joined to a session's channel counts in its
`active_connections`, `last_activity` follows, and a restarted gateway takes back the counts it left behind.

The convention: a Realtime topic `realtime:session:<session uuid>:<channel name>` is that session's channel of
that name (the row is created on the first join). What each gateway added is recorded per channel in
`private.gateway_connections` (sql/007), so `reconcile` subtracts exactly its own counts, never another writer's.
Other topics are not tracked.
"""

from __future__ import annotations

import re
import uuid

import psycopg

_TOPIC = re.compile(r"realtime:session:([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
                    r":(.+)", re.S)


def session_channel(topic: str) -> tuple[uuid.UUID, str] | None:
    """The session and channel name a topic names, or None for a topic of no session."""
    match = _TOPIC.fullmatch(topic)
    return (uuid.UUID(match[1]), match[2]) if match else None


def reconcile(conn: psycopg.Connection, gateway: str) -> int:
    """Take back every count this gateway recorded (at its start: it has no clients yet); the channels fixed."""
    with conn.transaction():
        fixed = conn.execute("""
            update public.websocket_channels c
            set active_connections = greatest(c.active_connections - g.connections, 0)
            from private.gateway_connections g
            where g.gateway = %s and g.channel_id = c.id and g.connections > 0
        """, [gateway]).rowcount
        conn.execute("delete from private.gateway_connections where gateway = %s", [gateway])
    return fixed


def joined(conn: psycopg.Connection, gateway: str, session: uuid.UUID, name: str) -> bool:
    """Count a client in; False when no such session exists (nothing is recorded)."""
    with conn.transaction():
        row = conn.execute("""
            insert into public.websocket_channels (session_id, channel_name, active_connections, last_activity)
            select id, %s, 1, private.as_of() from public.live_sessions where id = %s
            on conflict (session_id, channel_name) do update
                set active_connections = websocket_channels.active_connections + 1, last_activity = private.as_of()
            returning id
        """, [name, session]).fetchone()
        if row is None:
            return False
        conn.execute("""
            insert into private.gateway_connections (channel_id, gateway, connections) values (%s, %s, 1)
            on conflict (channel_id, gateway) do update set connections = gateway_connections.connections + 1
        """, [row[0], gateway])
    return True


def left(conn: psycopg.Connection, gateway: str, session: uuid.UUID, name: str) -> None:
    """Count a client out, as far as this gateway counted it in."""
    with conn.transaction():
        row = conn.execute("""
            update private.gateway_connections g set connections = g.connections - 1
            from public.websocket_channels c
            where c.session_id = %s and c.channel_name = %s and g.channel_id = c.id and g.gateway = %s
              and g.connections > 0
            returning c.id
        """, [session, name, gateway]).fetchone()
        if row is not None:
            conn.execute("""
                update public.websocket_channels set active_connections = greatest(active_connections - 1, 0),
                    last_activity = private.as_of()
                where id = %s
            """, [row[0]])
