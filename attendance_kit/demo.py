"""The demo world: the documented personas (README, "Personas") with their courses, groups and sessions, as
sql/seed.sql loads them. Their ids and emails are defined here once; tests, benchmarks, the term generator and
notebooks import them rather than retype them (a test holds them equal to sql/seed.sql)."""

from __future__ import annotations

from typing import NamedTuple

import psycopg

from .migrations import execute_sql
from .paths import SQL_DIR

DEMO_DATA_FILE = SQL_DIR / "seed.sql"


class Persona(NamedTuple):
    id: str
    email: str
    name: str


ADA = Persona("a0000000-0000-4000-8000-000000000001", "ada@attendance-kit.test", "Ada Lovelace")
GRACE = Persona("a0000000-0000-4000-8000-000000000002", "grace@attendance-kit.test", "Grace Hopper")
SAM = Persona("b0000000-0000-4000-8000-000000000001", "sam@attendance-kit.test", "Sam Okafor")
TESS = Persona("b0000000-0000-4000-8000-000000000002", "tess@attendance-kit.test", "Tess Nguyen")
UMA = Persona("b0000000-0000-4000-8000-000000000003", "uma@attendance-kit.test", "Uma Patel")
OLIVE = Persona("b0000000-0000-4000-8000-000000000004", "olive@attendance-kit.test", "Olive Chen")
PAT = Persona("b0000000-0000-4000-8000-000000000005", "pat@attendance-kit.test", "Pat Kowalski")
PERSONAS = (ADA, GRACE, SAM, TESS, UMA, OLIVE, PAT)

# Ada teaches Analytical Engines to group Engines A (Sam, Tess, Uma); Grace teaches Compilers to Compilers B
# (Olive, Pat). Each course has one lecture, scheduled.
ENGINES_COURSE = "c0000000-0000-4000-8000-000000000001"
COMPILERS_COURSE = "c0000000-0000-4000-8000-000000000002"
ENGINES_GROUP = "60000000-0000-4000-8000-000000000001"
COMPILERS_GROUP = "60000000-0000-4000-8000-000000000002"
ENGINES_LECTURE = "5e000000-0000-4000-8000-000000000001"
COMPILERS_LECTURE = "5e000000-0000-4000-8000-000000000002"


def load_demo_data(conn: psycopg.Connection) -> None:
    """Load sql/seed.sql in one transaction; loading it again changes nothing."""
    with conn.transaction():
        execute_sql(conn, DEMO_DATA_FILE.name, DEMO_DATA_FILE.read_text(encoding="utf-8"))
