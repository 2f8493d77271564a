"""The wire's JSON: values written as Supabase writes a change's (wal2json's values through `to_jsonb`), for
events and Supabase Realtime's frames: a NaN or infinite number is null, a bytea its hex digits without `\\x`.

A leaf: it imports nothing of the kit, so the subscription model, the protocol and the gateway all write JSON the
same way without importing each other.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, time
from decimal import Decimal
from typing import Any


def event_json(value: Any) -> str:
    """The event (or any of its values) as JSON, values written as Supabase writes them (see above)."""
    return _json(value, ensure_ascii=False, separators=(", ", ": "))


def wire_json(value: Any) -> str:
    """As `event_json`, compact and ASCII only: for the wire."""
    return _json(value, ensure_ascii=True, separators=(",", ":"))


def _json(value: Any, **options: Any) -> str:
    try:
        return json.dumps(value, default=json_value, allow_nan=False, **options)
    except ValueError:  # a float NaN or infinity somewhere: wal2json writes it null
        return json.dumps(_finite(value), default=json_value, **options)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def json_value(value: Any) -> Any:
    """A value JSON cannot take as it is, as `to_jsonb` writes it (json.dumps' `default`)."""
    if isinstance(value, (datetime, time)):
        text = value.isoformat()
        if value.microsecond:  # PostgreSQL trims the fraction's trailing zeros
            head, _, rest = text.partition(".")
            text = f"{head}.{rest[:6].rstrip('0')}{rest[6:]}"
        return text
    if isinstance(value, Decimal):  # a JSON number, as to_jsonb writes numeric (exact to 15 digits)
        if not value.is_finite():
            return None  # NaN, Infinity: null, as wal2json writes them
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()  # wal2json's text of a bytea
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)  # UUID, date, time, timedelta, ...
