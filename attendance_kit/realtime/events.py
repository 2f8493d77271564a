"""The event a change becomes for one role, built as Supabase Realtime builds it (its `realtime.apply_rls`).

- An event carries the columns the role may select (of those, with a `select`, the ones it lists and the primary
  key), and its `columns` their names and types.
- An INSERT has a `record`, a DELETE an `old_record`, an UPDATE both. An UPDATE's `old_record` is what the
  replica identity logged (by default the key the new row keeps); a DELETE's is the primary key alone where the
  table has RLS enabled.
- A change whose wal2json message would exceed 1 MB carries `Error 413: Payload Too Large` and only the values
  whose JSON takes at most 64 bytes.
- An error decided before (`NO_KEY`, `UNAUTHORIZED`: see delivery.py) comes without values or timestamp.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from .catalog import Access, TablePlan
from .decoding import UNCHANGED_TOAST, Change, Relation
from .subscriptions import Event
from .wire import event_json

MAX_RECORD_BYTES = 1024 * 1024  # Supabase Realtime's poll_max_record_bytes
MAX_VALUE_BYTES = 64  # what is left of an oversized change: the values whose JSON fits in this

NO_KEY = "Error 400: Bad Request, no primary key"
UNAUTHORIZED = "Error 401: Unauthorized"
TOO_LARGE = "Error 413: Payload Too Large"

Values = tuple[dict[str, Any], dict[str, Any]]  # a change's new and old row, as Python values
ColumnList = tuple[tuple[tuple[str, str], ...], ...]  # an event's `columns`: (("name", ...), ("type", ...)) each


class EventBuilder:
    """Builds events, keeping each table's column list per set of visible columns from event to event."""

    def __init__(self, type_name: Callable[[int], str]) -> None:
        """`type_name`: a type's name from its OID (`ChangeFeed.type_name`)."""
        self._type_name = type_name
        # By the relation's identity (hashing a Relation hashes all its columns, at every event): the relation is
        # kept in the value, so its id is not another's while cached.
        self._column_lists: dict[tuple[int, tuple[str, ...]], tuple[Relation, ColumnList]] = {}

    def event(self, change: Change, values: Values, plan: TablePlan, access: Access, error: str | None,
              select: tuple[str, ...] | None = None) -> Event:
        """The change as this role receives it (with `select`, those columns and the key): Supabase's payload, or
        its error without values."""
        relation, (new, old) = change.relation, values
        visible = access.visible if select is None else tuple(
            column for column in access.visible if column in select or column in plan.key)
        event = Event(schema=relation.schema, table=relation.name, type=change.type, commit_timestamp=None,
                      columns=[], errors=[error] if error else None)
        if error is None:
            event["commit_timestamp"] = timestamp_text(change.commit_timestamp)
            event["columns"] = [dict(column) for column in self._columns(relation, visible)]
        if change.type != "DELETE":
            event["record"] = {}
        if change.type != "INSERT":
            event["old_record"] = {}
        if error is not None:
            return event
        oversized = is_oversized(change, plan)
        if oversized:
            event["errors"] = [TOO_LARGE]

        def shown(row: dict[str, Any], columns: Sequence[str]) -> dict[str, Any]:
            return {name: value for name, value in row.items() if name in columns and value is not UNCHANGED_TOAST
                    and not (oversized and len(event_json(value).encode()) > MAX_VALUE_BYTES)}

        if change.type != "DELETE":
            event["record"] = shown(new, visible)
        if change.type == "UPDATE":  # the replica identity: the old row's, or the key the new row keeps
            identity = old or {c.name: new.get(c.name) for c in relation.columns if c.in_identity}
            event["old_record"] = shown(identity, visible)
        elif change.type == "DELETE":
            keys_only = [column for column in visible if column in plan.key]
            event["old_record"] = shown(old, keys_only if plan.row_security else visible)
        return event

    def _columns(self, relation: Relation, visible: tuple[str, ...]) -> ColumnList:
        """The `columns` of an event: name and type of each column the subscriber may select (cached)."""
        key = (id(relation), visible)
        if key not in self._column_lists:
            self._column_lists[key] = relation, tuple((("name", c.name), ("type", self._type_name(c.type_oid)))
                                                      for c in relation.columns if c.name in visible)
        return self._column_lists[key][1]


@functools.lru_cache(maxsize=4096)  # a transaction's changes share their commit's
def timestamp_text(moment: datetime) -> str:
    """Supabase's commit_timestamp: UTC, milliseconds, `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def is_oversized(change: Change, plan: TablePlan) -> bool:
    """Whether the change's wal2json message (what Supabase measures against `MAX_RECORD_BYTES`) is too large:
    its values' JSON strings plus, per column, its name, type and keys."""
    raw = [value for row in (change.new, change.old) if row for value in row if isinstance(value, bytes)]
    per_column = 60 + max((len(name) + len(sql_type) for name, sql_type in plan.columns), default=0)
    overhead = 200 + 3 * per_column * len(plan.columns)  # columns, identity and pk
    if 6 * sum(map(len, raw)) + overhead <= MAX_RECORD_BYTES:  # JSON escaping at most sextuples a byte
        return False
    return sum(len(json.dumps(value.decode(), ensure_ascii=False).encode()) for value in raw) + overhead > (
        MAX_RECORD_BYTES)
