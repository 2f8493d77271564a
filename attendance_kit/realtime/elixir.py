"""How Supabase Realtime (Elixir) writes terms and database errors into the messages it sends a client.

A refused `postgres_changes` entry's message quotes the parsed entry (`[event: *, schema: public, ...]`), as
its `params_to_log` writes it with Elixir's `inspect(value, pretty: true)`, and the database's error as Postgrex
writes it (`ERROR 22P02 (invalid_text_representation) invalid input syntax ...`). The kit writes them the same way,
so a message reads as on Supabase.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import psycopg

WIDTH = 80  # inspect's default line width, beyond which a pretty list puts an element per line

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\f": "\\f", "\v": "\\v",
            "\b": "\\b", "\a": "\\a", "\x1b": "\\e", "\x00": "\\0"}


# Unicode's White_Space, what Elixir's String.trim removes (Python's strip() also takes \x1c to \x1f)
WHITESPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
             "\u2028\u2029\u202f\u205f\u3000"


def trim(text: str) -> str:
    """Elixir's `String.trim`."""
    return text.strip(WHITESPACE)


def inspect(value: Any, pretty: bool = True) -> str:
    """Elixir's `inspect(value, pretty: true)` of JSON-like terms (strings, numbers, booleans, nil, lists, maps)
    and tuples: one line when it fits in 80 columns; else a list puts each element on a line of its own, indented
    two, and a tuple as many elements on a line as fit, the rest under its first. `pretty=False`: `inspect(value)`,
    one line whatever its length."""
    flat = _flat(value)
    if not pretty or len(flat) <= WIDTH or not isinstance(value, list):
        return flat
    lines = [_tuple_lines(item, 2) if isinstance(item, tuple) else _flat(item) for item in value]
    return "[\n" + ",\n".join("  " + line for line in lines) + "\n]"


def _tuple_lines(value: tuple[Any, ...], column: int) -> str:
    """A tuple starting at `column`: flat if it fits, else its elements filled line by line (Elixir's flex
    breaks), each further line indented under the first element. The caller may add a comma after it."""
    flat = _flat(value)
    if column + len(flat) + 1 <= WIDTH:
        return flat
    items = [_flat(item) for item in value]
    lines, current, start = [], "{" + items[0], column  # `start`: the column the current line begins at
    for item in items[1:]:
        if start + len(current) + len(", ") + len(item) + 1 <= WIDTH:  # + 1: its comma or the closing brace
            current += ", " + item
        else:
            lines.append(current + ",")
            current, start = " " * (column + 1) + item, 0
    return "\n".join([*lines, current + "}"])


def to_log(value: Any) -> str:
    """Realtime's `to_log`: a string as it is, anything else inspected."""
    return value if isinstance(value, str) else inspect(value)


def _flat(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + re.sub(r'[\\"\n\t\r\f\v\b\a\x1b\x00]|#\{',
                            lambda m: "\\#{" if m[0] == "#{" else _ESCAPES[m[0]], value) + '"'
    if isinstance(value, dict):  # keys in order, as Elixir prints a small map
        return "%{" + ", ".join(f"{_flat(k)} => {_flat(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, tuple):
        return "{" + ", ".join(map(_flat, value)) + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(map(_flat, value)) + "]"
    return str(value)


def postgrex_message(error: psycopg.Error) -> str:
    """A server's error as Postgrex's `Exception.message/1` writes it: severity, code and its name, message,
    then the detail after a blank line."""
    diag = error.diag
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()  # InvalidTextRepresentation
    text = f"{diag.severity_nonlocalized or 'ERROR'} {error.sqlstate} ({name}) {diag.message_primary}"
    return text + (f"\n\n{diag.message_detail}" if diag.message_detail else "")


def raised(message: str) -> str:
    """What Postgrex writes of a plpgsql `raise exception '<message>'` (Supabase's trigger's refusals)."""
    return f"ERROR P0001 (raise_exception) {message}"
