"""Where the kit's files are. The kit runs from a clone (`./kit`, or an editable install): its sql/ and notebooks/
sit beside the package; what the package itself reads at run time (the draft) ships inside it, in data/."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
SQL_DIR = PROJECT_DIR / "sql"
NOTEBOOKS_DIR = PROJECT_DIR / "notebooks"
DRAFT_FILE = PACKAGE_DIR / "data" / "draft.md"
