"""Benchmarks (`attendance-kit bench ...`): figures measured side by side in one run, printed, never asserted.

One module per benchmark; each exposes a function returning a JSON-ready dict, which `render` prints.
"""

from __future__ import annotations

import json
from typing import Any


def render(result: dict[str, Any], output_format: str) -> str:
    """The result as JSON, or as an aligned two-column table (nested values shown as JSON)."""
    if output_format == "json":
        return json.dumps(result)
    width = max(len(key) for key in result)
    return "\n".join(
        f"{key:<{width}}  {json.dumps(value) if isinstance(value, (dict, list)) else value}"
        for key, value in result.items()
    )
