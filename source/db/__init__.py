"""The task store: one interface (``TaskStore``), a SQLite and a Postgres/Supabase backend."""

from __future__ import annotations

from source.db.config import DbType, StoreConfig, StoreConfigError
from source.db.models import NewTask, Task, TaskStatus
from source.db.store import TaskStore

__all__ = ["DbType", "NewTask", "StoreConfig", "StoreConfigError", "Task", "TaskStatus", "TaskStore", "open_store"]


def open_store(config: StoreConfig) -> TaskStore:
    """Open (not migrate) the store the config names."""
    config.validate()
    if config.db_type is DbType.SQLITE:
        from source.db.sqlite import SqliteTaskStore

        return SqliteTaskStore(config.db_file, busy_timeout_seconds=config.busy_timeout_seconds)
    raise StoreConfigError("the Postgres/Supabase backend is not available in this build yet")
