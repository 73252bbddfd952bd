"""Where the task store lives, as the CLI flags and environment describe it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class DbType(str, Enum):
    SQLITE = "sqlite"
    SUPABASE = "supabase"


class StoreConfigError(ValueError):
    """The settings cannot name a usable store; the message says which setting is missing."""


class StoreUnavailable(RuntimeError):
    """The store cannot be reached or its schema is not in place; the message says what to do."""

    exit_code = 1


# Exit codes of worker.py and the tasks CLI when a shared database is not ready (docs/operations.md, "Exit codes").
EXIT_SCHEMA_OUTDATED = 4
EXIT_NO_TASKS_TABLE = 5
# How an idle worker on Postgres/Supabase learns of new rows (--wake-mode): auto = doorbell on a direct or
# session-pooler connection, poll behind the transaction pooler and over the Supabase API; doorbell = wake-one,
# the worker's waiting connection sleeping until the dispatcher rings it (027; LISTEN where the server may not
# ring it); listen = wake-one by LISTEN on the worker's own channel (011); both take one more connection;
# poll = wake-one by polling the worker's wake marker (no waiting connection); broadcast = every idle worker
# looks at the table on every change (before 011).
WAKE_MODE_CHOICES = ("auto", "doorbell", "listen", "poll", "broadcast")
# Supabase's transaction pooler: no LISTEN, no prepared statements (see docs/operations.md).
TRANSACTION_POOLER_PORT = "6543"

# Workers and read-only commands never migrate a shared database; this is what they tell the operator.
MIGRATE_COMMAND = "python worker.py --db-type supabase --migrate-only  (direct URL in SUPABASE_DB_URL or --db-url)"


class SchemaOutdated(StoreUnavailable):
    """The database answers, but its migrations are behind this code; nothing was changed."""

    exit_code = EXIT_SCHEMA_OUTDATED

    def __init__(self, where: str, present: int, needed: int, *, reason: str | None = None) -> None:
        super().__init__(f"{reason + ': ' if reason else ''}the task schema at {where} is at version {present}, "
                         f"this code needs version {needed}; migrate it with: {MIGRATE_COMMAND}")
        self.present = present
        self.needed = needed


class NoTasksTable(StoreUnavailable):
    """The database has no ``tasks`` table at all (a wrong database or schema?); nothing was created."""

    exit_code = EXIT_NO_TASKS_TABLE

    def __init__(self, where: str) -> None:
        super().__init__(f"there is no tasks table at {where} (wrong database or schema?); nothing was created. "
                         f"To create the schema there: {MIGRATE_COMMAND}")


@dataclass(frozen=True)
class StoreConfig:
    db_type: DbType = DbType.SQLITE
    db_file: str = "tasks.db"
    busy_timeout_seconds: float = 30.0
    # Supabase/Postgres: a direct Postgres URL, or the Supabase REST URL + a service key.
    db_url: str | None = None
    supabase_url: str | None = None
    supabase_key: str | None = None
    supabase_anon_key: str | None = None
    # A user's personal access token (user_api_tokens): the store reaches only that user's projects' rows.
    access_token: str | None = None
    storage_bucket: str = "image_uploads"
    # Reigh's edge functions (source/db/reigh_edge.py): a Reigh personal access token or the service-role key,
    # sent as reigh-worker sends it; the worker then talks to claim-next-task, complete_task, ... only.
    reigh_access_token: str | None = None
    reigh_max_task_wait_minutes: int = 5
    # Direct Postgres: the most server connections for statements (the LISTEN connection is one more); None = 1.
    db_max_connections: int | None = None
    wake_mode: str = "auto"

    @property
    def has_storage(self) -> bool:
        """Outputs go to Supabase Storage when the project URL and a key are known (API mode always); in
        edge-function mode Reigh's complete_task stores them."""
        return bool(self.supabase_url and self.supabase_key) and not self.reigh_access_token

    def __repr__(self) -> str:  # keys never end up in logs or tracebacks
        return (
            f"StoreConfig(db_type={self.db_type.value!r}, db_file={self.db_file!r}, "
            f"db_url={'set' if self.db_url else None}, supabase_url={self.supabase_url!r}, "
            f"supabase_key={'set' if self.supabase_key else None}, "
            f"access_token={'set' if self.access_token else None}, "
            f"reigh_access_token={'set' if self.reigh_access_token else None})"
        )

    def validate(self) -> None:
        if self.reigh_access_token:
            if self.db_type is not DbType.SUPABASE or self.db_url or self.access_token:
                raise StoreConfigError("--reigh-access-token talks to Reigh's edge functions only: drop --db-url, "
                                       "--supabase-access-token and --db-type sqlite (see docs/reigh.md)")
            if not self.supabase_url:
                raise StoreConfigError("--reigh-access-token needs --supabase-url / SUPABASE_URL")
        if self.db_type is DbType.SUPABASE and not self.db_url and not (self.supabase_url and self.supabase_key) \
                and not self.reigh_access_token:
            missing = []
            if not self.supabase_url:
                missing.append("--supabase-url / SUPABASE_URL")
            if not self.supabase_key:
                missing.append("SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SERVICE_KEY), or --supabase-access-token "
                               "with --supabase-anon-key")
            raise StoreConfigError(
                "--db-type supabase needs either a direct Postgres URL (--db-url / SUPABASE_DB_URL) or "
                f"the Supabase API settings; missing: {', '.join(missing)}. Refusing to fall back to SQLite."
            )
        direct = self.db_type is DbType.SUPABASE and bool(self.db_url)
        if self.db_max_connections is not None and not direct:
            raise StoreConfigError("--db-max-connections applies to a direct Postgres URL (--db-url) only: the "
                                   "Supabase API and SQLite hold no connection pool of this worker's")
        if self.wake_mode not in WAKE_MODE_CHOICES:
            raise StoreConfigError(f"--wake-mode must be one of {', '.join(WAKE_MODE_CHOICES)}, not {self.wake_mode!r}")
        if self.wake_mode != "auto" and self.db_type is not DbType.SUPABASE:
            raise StoreConfigError("--wake-mode applies to --db-type supabase; SQLite workers wake on the db "
                                   "file's changes")
        waiting = self.wake_mode in ("doorbell", "listen")
        if waiting and not direct:
            raise StoreConfigError(f"--wake-mode {self.wake_mode} needs a direct Postgres URL (--db-url): the "
                                   "Supabase API holds no waiting connection (use poll or broadcast)")
        if waiting and through_transaction_pooler(self.db_url or ""):
            raise StoreConfigError(f"--wake-mode {self.wake_mode}: a waiting connection does not work through "
                                   f"Supabase's transaction pooler (port {TRANSACTION_POOLER_PORT}); use poll "
                                   "there, or the session pooler or a direct connection")

    @property
    def wake(self) -> tuple[str, bool | None, bool | None]:
        """The store's (wake, listen, doorbell) for ``wake_mode`` (see PostgresTaskStore)."""
        return {"auto": ("one", None, None), "doorbell": ("one", True, True), "listen": ("one", True, False),
                "poll": ("one", False, None), "broadcast": ("all", None, None)}[self.wake_mode]


def through_transaction_pooler(url: str) -> bool:
    from psycopg.conninfo import conninfo_to_dict  # the URL forms psycopg takes, keyword strings included

    return bool(url) and str(conninfo_to_dict(url).get("port", "")) == TRANSACTION_POOLER_PORT
