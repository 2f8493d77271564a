"""Realtime Authorization: what a private channel's user may do on its topic, asked of the RLS policies on
`realtime.messages` the way Supabase Realtime asks them (its `Realtime.Tenants.Authorization`).

Policies never see a real message: they are asked about probe rows. In one transaction, rolled back whatever
happens:

- read (SELECT): a probe row per extension (`broadcast`, `presence`) is inserted as the connecting role (which
  passes RLS: the kit's superuser, Supabase's admin), then the user's `role`, `request.jwt.claims` (and `.sub`,
  `.role`) and `realtime.topic` (the topic without `realtime:`) are set locally and the probes selected back: a
  probe the user sees is that extension's read;
- write (INSERT): as the user, a row per extension inserted in a savepoint: allowed unless RLS (or a missing
  grant) refuses it with 42501.

A policy that raises is `PolicyError`, which refuses that user only: the transaction is rolled back and the
connection goes on. It runs on the realtime client's own connection, never the slot's (docs/developers.md).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from ..errors import one_line

EXTENSIONS = ("broadcast", "presence")
_NOW_UTC = "now() at time zone 'utc'"  # inserted_at is a UTC timestamp without time zone, as Realtime writes it


class PolicyError(Exception):
    """A policy on realtime.messages failed (raised, or the check could not run): the user is refused."""


@dataclass(frozen=True)
class Allowed:
    """What a check found: per extension asked, whether the user may read it, and write it."""

    read: dict[str, bool]
    write: dict[str, bool]


def check(conn: psycopg.Connection, claims: dict[str, Any], topic: str, *, read: tuple[str, ...] = (),
          write: tuple[str, ...] = ()) -> Allowed:
    """Which of `read` and `write` (extensions) the user of `claims` may on `topic` (without `realtime:`)."""
    try:
        with conn.transaction(force_rollback=True):
            probes = _insert_probes(conn, topic, read)
            conn.execute("select set_config('role', %s, true), set_config('realtime.topic', %s, true), "
                         "set_config('request.jwt.claims', %s, true), set_config('request.jwt.claim.sub', %s, true), "
                         "set_config('request.jwt.claim.role', %s, true), set_config('request.headers', '{}', true)",
                         [str(claims.get("role")), topic, json.dumps(claims), str(claims.get("sub") or ""),
                          str(claims.get("role"))])
            seen = {extension for (extension,) in conn.execute(
                "select extension from realtime.messages where id = any(%s)", [list(probes)])} if probes else set()
            return Allowed({e: e in seen for e in read}, {e: _may_insert(conn, topic, e) for e in write})
    except psycopg.Error as error:
        raise PolicyError(one_line(error)) from None


def _insert_probes(conn: psycopg.Connection, topic: str, extensions: tuple[str, ...]) -> dict[uuid.UUID, str]:
    probes = {uuid.uuid4(): extension for extension in extensions}
    for id, extension in probes.items():
        conn.execute(f"insert into realtime.messages (id, topic, extension, inserted_at, updated_at) "
                     f"values (%s, %s, %s, {_NOW_UTC}, {_NOW_UTC})", [id, topic, extension])
    return probes


def _may_insert(conn: psycopg.Connection, topic: str, extension: str) -> bool:
    try:
        with conn.transaction():  # a savepoint: a refusal leaves the check's transaction usable
            conn.execute(f"insert into realtime.messages (topic, extension, inserted_at, updated_at) "
                         f"values (%s, %s, {_NOW_UTC}, {_NOW_UTC})", [topic, extension])
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True
