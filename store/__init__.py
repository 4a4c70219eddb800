"""The SQLite record of runs, programs, individuals and their lineage."""

from .db import (
    DISCARD_COLUMNS,
    INDIVIDUAL_STATUSES,
    RUN_STATUSES,
    SCHEMA,
    Store,
    StoreError,
    database_error,
)

__all__ = ["DISCARD_COLUMNS", "INDIVIDUAL_STATUSES", "RUN_STATUSES", "SCHEMA", "Store",
           "StoreError", "database_error"]
