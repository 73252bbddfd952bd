"""The task store: one interface (``TaskStore``), a SQLite and a Postgres/Supabase backend."""

from __future__ import annotations

from source.db.config import DbType, StoreConfig, StoreConfigError
from source.db.models import NewTask, Task, TaskStatus
from source.db.store import TaskStore

__all__ = ["DbType", "NewTask", "StoreConfig", "StoreConfigError", "Task", "TaskStatus", "TaskStore", "open_store",
           "prepare_schema"]


def open_store(config: StoreConfig, *, keep_local: bool = False,
               runnable_task_types: frozenset[str] | None = None) -> TaskStore:
    """Open (not migrate) the store the config names. ``keep_local`` and ``runnable_task_types`` matter to
    Reigh only: through its edge functions the store uploads the output (complete_task) and gives back a
    claimed row of a task type this worker does not run; a direct URL that reaches a Reigh database opens the
    guest store there (docs/reigh.md), which claims only ``runnable_task_types``."""
    config.validate()
    if config.reigh_access_token:
        import os

        from source.db.reigh_edge import ReighEdgeStore, edge_urls

        assert config.supabase_url
        return ReighEdgeStore(config.supabase_url, config.reigh_access_token, service_key=config.supabase_key,
                              urls=edge_urls(config.supabase_url, os.environ),
                              max_task_wait_minutes=config.reigh_max_task_wait_minutes,
                              runnable_task_types=runnable_task_types, keep_local=keep_local)  # type: ignore[return-value]
    if config.db_type is DbType.SQLITE:
        from source.db.sqlite import SqliteTaskStore

        return SqliteTaskStore(config.db_file, busy_timeout_seconds=config.busy_timeout_seconds)
    if config.db_url:
        from source.db.postgres import PostgresTaskStore
        from source.db.reigh_guest import ReighGuestStore, reigh_schema_of

        reigh_schema = reigh_schema_of(config.db_url)
        if reigh_schema is not None:
            return ReighGuestStore(config.db_url, reigh_schema, runnable_task_types=_guest_task_types(runnable_task_types),
                                   max_connections=config.db_max_connections or 1, access_token=config.access_token,
                                   wake_mode=config.wake_mode)

        wake, listen, doorbell = config.wake
        return PostgresTaskStore(config.db_url, access_token=config.access_token, wake=wake, listen=listen,
                                 doorbell=doorbell, max_connections=config.db_max_connections or 1)
    from source.db.supabase_store import SupabaseTaskStore

    assert config.supabase_url and config.supabase_key  # validate() said so
    return SupabaseTaskStore(config.supabase_url, config.supabase_key, access_token=config.access_token,
                             wake=config.wake[0])


def prepare_schema(store: TaskStore, config: StoreConfig) -> None:
    """Before a worker or a command uses the store. SQLite is the embedded single-box queue: its file is
    created and migrated here. A shared database (Postgres, the Supabase API) is only checked, never
    changed: it raises SchemaOutdated / NoTasksTable, which say how to migrate (``--migrate-only``)."""
    if config.db_type is DbType.SQLITE:
        store.migrate()
    else:
        store.check_schema()  # type: ignore[attr-defined]  (RpcTaskStore)


def _guest_task_types(runnable: frozenset[str] | None) -> tuple[str, ...]:
    """On a Reigh database the guest claims only the types it runs: "any" (None) means every known one."""
    if runnable is None:
        from source.task_types import known

        runnable = frozenset(known())
    return tuple(sorted(runnable))
