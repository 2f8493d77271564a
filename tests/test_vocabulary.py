"""One word per concept (DEVELOPERS.md, the glossary): the retired meanings stay retired.

The kit's text (code, tests, notebooks' cells, sql/, the README and docs) is searched for words in a meaning they
no longer have. Each pattern below finds a retired use without flagging the word's kept meaning; a hit names
file:line (a notebook's cell and line) and the word to use instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from attendance_kit.paths import PROJECT_DIR

ROOTS = ["attendance_kit", "tests", "notebooks", "sql", "docs", "README.md", "DEVELOPERS.md"]
SUFFIXES = {".py", ".ipynb", ".md", ".sql", ".yaml", ".yml", ".cfg", ".mjs", ".js", ".json", ".toml", ".txt"}
SKIPPED_DIRECTORIES = {"node_modules", "__pycache__", ".ipynb_checkpoints", "_build", "build"}
SKIPPED_FILES = {
    Path(__file__).resolve(),  # it names the retired words
    PROJECT_DIR / "attendance_kit" / "data" / "draft.md",  # the draft, verbatim
    PROJECT_DIR / "docs" / "glossary.md",  # it says which words are retired, and why
    PROJECT_DIR / "tests" / "js" / "package-lock.json",
}


class Retired(NamedTuple):
    pattern: re.Pattern[str]  # matches the retired meaning only
    instead: str  # what to say
    under: str | None = None  # only in files under this folder


RETIRED = [
    # "seed": the draft (the spec) or the demo data. Kept: `seed.sql` (Supabase's file name) and a random seed.
    Retired(re.compile(r"(?<!random )(?<!random_)\bseed(s|ed)?\b(?!\.sql)", re.I),
            "the draft (the spec), or the demo data (sql/seed.sql)"),
    # "lesson" for a class meeting (a lesson is a notebook's own database): the term's and notebooks' phrases.
    Retired(re.compile(r"\blessons\s*=|_hold_lesson|\bterm of lessons\b|\bscripted lesson\b|\bper lesson\b"
                       r"|\blessons? (starts|over|day|time)\b|\blesson's (time|minutes|start|channels)\b", re.I),
            "session (a row of live_sessions), or lecture"),
    # "Step N" for a stage of the realtime pipeline: steps are the draft's.
    Retired(re.compile(r"\bstep \d+[,:]", re.I), "the stage's name (the slot, decoding, subscriptions, ...)",
            under="attendance_kit/realtime"),
    # A lane (an authorising connection) called a worker.
    Retired(re.compile(r"subscribers_per_worker", re.I), "SUBSCRIBERS_PER_LANE / subscribers_per_lane"),
    # The gateway's thread that owns the database.
    Retired(re.compile(r"\b_FeedThread\b"), "DatabaseWorker"),
    # The decoder takes a message: `decode`, as `feed` is the change feed's.
    Retired(re.compile(r"(decoder|PgOutputDecoder\(\))\.feed\("), "PgOutputDecoder.decode"),
    # Checking a JWT is "check": `verify` is the access contract's.
    Retired(re.compile(r"\btokens\.verify\b|\bfrom \.*(realtime\.)?tokens import [^\n]*\bverify\b"),
            "tokens.check_token"),
    # A PostgreSQL session is a connection.
    Retired(re.compile(r"\bsession's `?(temporary slots|pg_temp|search_path)|\bplans for the session\b", re.I),
            "connection"),
]


def text_files() -> Iterator[Path]:
    for root in ROOTS:
        path = PROJECT_DIR / root
        candidates = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        for candidate in candidates:
            if (candidate.is_file() and candidate.suffix in SUFFIXES and candidate.resolve() not in SKIPPED_FILES
                    and not SKIPPED_DIRECTORIES & set(candidate.relative_to(PROJECT_DIR).parts)):
                yield candidate


def lines_of(path: Path) -> Iterator[tuple[str, str]]:
    """(where, line): a file's lines, or a notebook's cells' source lines (its outputs are what the code printed)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        for number, cell in enumerate(json.loads(text)["cells"], 1):
            for line_number, line in enumerate("".join(cell["source"]).splitlines(), 1):
                yield f"cell {number} line {line_number}", line
    else:
        for line_number, line in enumerate(text.splitlines(), 1):
            yield str(line_number), line


def retired_uses() -> list[str]:
    found = []
    for path in text_files():
        relative = path.relative_to(PROJECT_DIR).as_posix()
        for where, line in lines_of(path):
            for retired in RETIRED:
                match = retired.pattern.search(line)
                if match and (retired.under is None or relative.startswith(retired.under + "/")):
                    found.append(f"{relative}:{where}: {match.group(0)!r} (say: {retired.instead}): {line.strip()}")
    return found


def test_no_retired_meaning_is_left() -> None:
    found = retired_uses()
    assert not found, "words in a retired meaning:\n" + "\n".join(found)


def test_the_patterns_find_the_retired_uses_and_spare_the_kept_ones() -> None:
    retired = ["Step 1 of the seed", "seed loaded", "the seed's policies", 'lessons = {ENGINES: "Engines"}',
               "_hold_lesson(conn)", "a term of lessons", "SUBSCRIBERS_PER_WORKER", "decoder.feed(data)",
               "from .tokens import TokenRefused, verify", "tokens.verify(token)", "drops a session's temporary slots"]
    kept = ["sql/seed.sql loads the demo data", "random_seed: int = 2026", "the same random seed",
            'lesson = kit.start_lesson("lesson_06")', "this lesson's data stays", "from .verification import verify",
            "SUBSCRIBERS_PER_LANE", "self.decoder.decode(data)", "Step 1 of the draft", "live_sessions"]
    for text in retired:
        assert any(retired.pattern.search(text) for retired in RETIRED), text
    for text in kept:
        assert not any(retired.pattern.search(text) for retired in RETIRED), text
