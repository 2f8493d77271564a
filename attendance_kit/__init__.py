"""attendance-kit: a Supabase-style realtime attendance schema on real PostgreSQL, driven from Jupyter."""

from .connection import (
    as_user,
    connect,
    database_url,
    require_logical_decoding,
    sql_engine,
)
from .databases import Lesson, scratch_database, start_lesson
from .demo import load_demo_data
from .display import query_as, show_contract, show_sql
from .errors import KitError
from .lints import run_lints
from .migrations import migrate, migration_status
from .paths import SQL_DIR
from .server import Cluster
from .term import load_demo_term
from .verification import Contract, Verification, verify

__all__ = [
    "SQL_DIR", "Cluster", "Contract", "KitError", "Lesson", "Verification", "as_user", "connect", "database_url",
    "load_demo_data", "load_demo_term", "migrate", "migration_status", "query_as", "require_logical_decoding",
    "run_lints", "scratch_database", "show_contract", "show_sql", "sql_engine", "start_lesson", "verify",
]
