"""Direct mode on a Reigh database (docs/reigh.md "Direct mode"): the Postgres store as a guest. Reigh's
tables, grants, policies, triggers and rows stay as they are; what the worker needs of its own lives in one
schema beside Reigh's (``wangp_<Reigh's schema>``, migrations in ``sql/postgres/reigh_guest``), whose SQL
verbs claim and complete Reigh's rows the way Reigh's own functions do."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from source.db.config import NoTasksTable, SchemaOutdated, StoreConfigError, StoreUnavailable
from source.db.models import NewTask, PurgedTask, TaskStatus
from source.db.postgres import PostgresTaskStore
from source.db.sql_files import list_migrations, load_queries

log = structlog.get_logger(__name__)

GUEST_SCHEMA_PREFIX = "wangp_"
_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_SEARCH_PATH_OPTION = re.compile(r"-c\s*search_path=\S+")
# The verbs that pick rows: each is told which task types this worker runs (Reigh has many it does not).
_CLAIMING = frozenset({"claim_next_task", "has_claimable_task"})
# --wake-mode values that need a trigger on the tasks table to ring or notify the worker.
WAITING_WAKE_MODES = ("doorbell", "listen")


def reigh_schema_of(url: str) -> str | None:
    """The schema holding Reigh's tables when ``url`` reaches a Reigh database, else None (also when the server
    does not answer: the ordinary store then reports that)."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            if not conn.execute(load_queries("postgres")["reigh_database"]).fetchone()[0]:
                return None
            return str(conn.execute("SELECT current_schema()").fetchone()[0])
    except psycopg.OperationalError:
        return None


def guest_schema_for(reigh_schema: str) -> str:
    return GUEST_SCHEMA_PREFIX + reigh_schema


def guest_url(url: str, reigh_schema: str) -> str:
    """``url`` with the guest's schema first on the search_path and Reigh's after it (other options kept)."""
    guest = guest_schema_for(reigh_schema)
    for name in (reigh_schema, guest):
        if not _PLAIN_NAME.match(name) or len(name) > 63:
            raise StoreConfigError(f"schema name {name!r}: the Reigh guest needs a plain lower-case schema name")
    options = _SEARCH_PATH_OPTION.sub("", str(conninfo_to_dict(url).get("options", ""))).strip()
    return make_conninfo(url, options=f"{options} -csearch_path={guest},{reigh_schema}".strip())


class ReighOwnsTheRows(PermissionError):
    def __init__(self, verb: str) -> None:
        super().__init__(f"{verb}: on a Reigh database the rows are Reigh's; create, cancel, retry and delete them "
                         "in Reigh (this worker only serves them)")


class ReighGuestStore(PostgresTaskStore):
    """The TaskStore verbs over Reigh's tables (``sql/postgres/reigh_guest``). Wake-up by polling: a guest adds
    no trigger to Reigh's tasks table, so no insert rings anyone."""

    MIGRATIONS = "reigh_guest"

    def __init__(self, url: str, reigh_schema: str, *, runnable_task_types: Sequence[str] = (),
                 max_connections: int = 1, retry_seconds: float = 120.0, access_token: str | None = None,
                 wake_mode: str = "auto") -> None:
        if wake_mode in WAITING_WAKE_MODES:
            raise StoreUnavailable(f"--wake-mode {wake_mode}: on a Reigh database the worker polls (a guest adds no "
                                   "trigger to Reigh's tasks table, so nothing could wake it); use auto or poll")
        if access_token is not None:
            raise StoreUnavailable("a personal access token goes through Reigh's edge functions "
                                   "(--reigh-access-token), not a direct database URL")
        self.reigh_schema = reigh_schema
        self.guest_schema = guest_schema_for(reigh_schema)
        self.runnable_task_types = sorted(set(runnable_task_types))
        super().__init__(guest_url(url, reigh_schema), max_connections=max_connections,
                         retry_seconds=retry_seconds, wake="all", listen=False, doorbell=False)

    def _route(self, function: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if function in _CLAIMING:
            if not self.runnable_task_types:
                raise StoreConfigError("the Reigh guest store claims only the task types it is given "
                                       "(runnable_task_types): none were")
            params = {**params, "p_runnable_task_types": self.runnable_task_types}
        return function, params

    def _refuse_reigh_database(self, conn: psycopg.Connection) -> None:
        return None  # the guest is the one store that belongs here

    # Rows are Reigh's to create, cancel, retry and delete (its web app, its edge functions): a guest only
    # serves them. The orchestrators' children are the exception (add_child_tasks).
    def add_task(self, task: NewTask) -> str:
        raise ReighOwnsTheRows("add_task")

    def cancel_task(self, task_id: str) -> bool:
        raise ReighOwnsTheRows("cancel_task")

    def retry_task(self, task_id: str) -> bool:
        raise ReighOwnsTheRows("retry_task")

    def purge_tasks(self, *, older_than_seconds: float, statuses: Sequence[TaskStatus],
                    dry_run: bool = False) -> list[PurgedTask]:
        raise ReighOwnsTheRows("purge_tasks")

    def migrate(self) -> list[str]:
        """Create the guest's schema (the only DDL outside it) and apply its migrations inside it."""

        def run(conn: psycopg.Connection) -> list[str]:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.guest_schema)))
            return self._migrate(conn)

        return self._with_own_connection(run)

    def check_schema(self) -> None:
        def check(conn: psycopg.Connection) -> None:
            if conn.execute("SELECT to_regclass('tasks') IS NULL AS missing").fetchone()["missing"]:
                raise NoTasksTable(self._where_schema(conn))
            tables = self._tables(conn)
            applied = self._applied(conn) if tables["has_migrations"] else []
            needed = max(m.version for m in list_migrations("postgres", self.MIGRATIONS))
            if self._pending(conn, tables["has_migrations"]):
                raise SchemaOutdated(f"{self._where} (guest schema {self.guest_schema})", max(applied, default=0),
                                     needed, reason="the Reigh guest schema is not in place")

        self._with_own_connection(check)
