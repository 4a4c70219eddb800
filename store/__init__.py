"""The SQLite record of runs, programs, individuals and their lineage."""

from .db import INDIVIDUAL_STATUSES, RUN_STATUSES, SCHEMA, Store, StoreError

__all__ = ["INDIVIDUAL_STATUSES", "RUN_STATUSES", "SCHEMA", "Store", "StoreError"]
