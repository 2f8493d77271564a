"""The seed's draft as it was handed over (tests/data/seed_draft.md, verbatim): its SQL, for the tests and the
benchmarks that show its defects beside the kit's fixes."""

from __future__ import annotations

import re

from .errors import KitError
from .server import PROJECT_DIR

SEED_DRAFT = PROJECT_DIR / "tests" / "data" / "seed_draft.md"


def seed_sql() -> str:
    """Every ```sql block of the draft, in order, as one script."""
    if not SEED_DRAFT.exists():
        raise KitError(f"the seed's draft is not at {SEED_DRAFT}: run this from a clone of the kit")
    return "\n".join(re.findall(r"```sql\n(.*?)```", SEED_DRAFT.read_text(encoding="utf-8"), re.S))
