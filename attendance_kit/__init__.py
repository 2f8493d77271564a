"""attendance-kit: a Supabase-style realtime attendance schema on real PostgreSQL, driven from Jupyter."""

from .connection import (
    as_user,
    connect,
    database_url,
    require_logical_decoding,
    sql_engine,
)
from .demo import load_demo_data, personas
from .errors import KitError
from .migrations import migrate, migration_status, show_sql
from .server import Cluster

__all__ = [
    "Cluster", "KitError", "as_user", "connect", "database_url", "load_demo_data", "migrate", "personas",
    "migration_status", "require_logical_decoding", "show_sql", "sql_engine",
]
