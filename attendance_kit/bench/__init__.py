"""Benchmarks (`attendance-kit bench ...`): figures measured side by side in one run, printed, never asserted.

One module per benchmark; each exposes a function returning a JSON-ready dict, which `render` prints.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


def render(result: dict[str, Any], output_format: str) -> str:
    """The result as JSON, or as aligned text: nested results indented, rows of like results as a table."""
    if output_format == "json":
        return json.dumps(result)
    return "\n".join(_lines(result, ""))


def _lines(result: dict[str, Any], indent: str) -> Iterator[str]:
    # Keys of nested results head their own block, so only the others set the column width.
    width = max((len(str(key)) for key, value in result.items() if not _is_block(value)), default=0)
    for key, value in result.items():
        if _is_block(value):
            yield f"{indent}{key}"
            yield from (_table(value, indent + "  ") if _is_table(value) else _lines(value, indent + "  "))
        else:
            yield f"{indent}{key:<{width}}  {json.dumps(value) if isinstance(value, (dict, list)) else value}"


def _is_block(value: Any) -> bool:
    return isinstance(value, dict) and bool(value)


def _is_table(rows: dict[str, Any]) -> bool:
    """Whether every value is a non-empty flat dict with the first one's keys: one table row each."""
    first = next(iter(rows.values()))
    return _is_block(first) and all(
        isinstance(row, dict) and row.keys() == first.keys()
        and not any(isinstance(cell, (dict, list)) for cell in row.values())
        for row in rows.values())


def _table(rows: dict[str, dict[str, Any]], indent: str) -> Iterator[str]:
    columns = list(next(iter(rows.values())))
    cells = [["", *columns]] + [[str(name), *(str(row[column]) for column in columns)] for name, row in rows.items()]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    for name, *values in cells:
        aligned = [value.rjust(width) for value, width in zip(values, widths[1:], strict=True)]
        yield indent + "  ".join([name.ljust(widths[0]), *aligned])
