"""The seed as drafted (tests/data/seed_draft.md, a verbatim copy): its SQL, for tests that show its defects."""

from __future__ import annotations

import re
from pathlib import Path

SEED_DRAFT = Path(__file__).parent / "data" / "seed_draft.md"


def seed_sql() -> str:
    """Every ```sql block of the draft, in order, as one script."""
    return "\n".join(re.findall(r"```sql\n(.*?)```", SEED_DRAFT.read_text(encoding="utf-8"), re.S))
