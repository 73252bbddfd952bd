"""Postgres task store over a direct connection (psycopg 3): many workers on one database, claims through
the SQL functions, wake-up by a doorbell or LISTEN/NOTIFY, reconnects with backoff.

Connection budget per worker: ``max_connections`` (default 1) for claims, heartbeats, progress and results,
plus one waiting connection (none behind Supabase's transaction pooler or with ``listen=False``: the worker
polls instead; worker.py --db-max-connections, --wake-mode).
Wake-one (default): an idle worker registers in ``workers`` and only the worker the dispatcher chose is
woken: its waiting connection sleeps on its doorbell (migration 027; pg_doorbell.py), or LISTENs on its own
channel (011) where the server cannot ring it or with ``doorbell=False``; wake-all (``wake="all"``): every
idle worker wakes on every insert and looks at the table (the design before 011, kept for comparison and for
older schemas)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg import sql
from psycopg.adapt import Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool

from source.db.config import (
    TRANSACTION_POOLER_PORT,
    NoTasksTable,
    SchemaOutdated,
    StoreConfigError,
    StoreUnavailable,
    through_transaction_pooler,
)
from source.db.models import NewTask, Task, TaskRejected
from source.db.pg_doorbell import Doorbell
from source.db.pg_listener import CHANNEL, ChangeListener, WakeSource
from source.db.rpc_store import (
    WAKE_MODES,
    IdleState,
    Row,
    RpcTaskStore,
    expected_schema_version,
)
from source.db.sql_files import Migration, list_migrations, load_queries
from source.db.transient import POSTGRES_OUTAGE, is_postgres_outage
from source.retry import Backoff, RetryPolicy, retry_call

log = structlog.get_logger(__name__)

T = TypeVar("T")
FALLBACK_POLL_SECONDS = 1.0
LISTEN_CONNECT_WAIT_SECONDS = 3.0
# A statement while the server is away: 50 ms, 100 ms, ... up to 5 s between tries, for retry_seconds.
STATEMENT_BACKOFF = Backoff(first=0.05, cap=5.0)
RETRYABLE = POSTGRES_OUTAGE


class PostgresTaskStore(RpcTaskStore):
    # The numbered migrations this store applies (sql/postgres/<folder>); the Reigh guest has its own set.
    MIGRATIONS = "migrations"

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 1,
        max_connections: int = 1,
        retry_seconds: float = 120.0,
        application_name: str = "wangp-worker",
        access_token: str | None = None,
        wake: str = "one",
        listen: bool | None = None,
        doorbell: bool | None = None,
    ) -> None:
        """``wake``: "one" (the dispatcher wakes one registered idle worker per row, 011) or "all" (every idle
        worker looks at the table on every change). ``listen``: wake-ups by LISTEN on one more connection, or
        (False) by polling, with no LISTEN connection at all; None: LISTEN unless behind the transaction
        pooler, which cannot carry it. ``doorbell``: a wake-one worker's waiting connection sleeps on its
        doorbell (027) rather than LISTENing on its channel (False: LISTEN, the design of 011; None: the doorbell
        wherever there is a waiting connection)."""
        if wake not in WAKE_MODES:
            raise ValueError(f"wake must be one of {', '.join(WAKE_MODES)}, not {wake!r}")
        self.retry_seconds = retry_seconds
        self._retry_policy = RetryPolicy(STATEMENT_BACKOFF, deadline_seconds=retry_seconds,
                                         retryable=is_postgres_outage)
        self.access_token = access_token
        self.wake = wake
        self._queries = load_queries("postgres")
        settings = conninfo_to_dict(url)
        self._through_transaction_pooler = through_transaction_pooler(url)
        if listen and self._through_transaction_pooler:
            raise StoreConfigError(f"LISTEN does not work through Supabase's transaction pooler (port "
                                   f"{TRANSACTION_POOLER_PORT}): wake up by polling there, or use the session "
                                   "pooler or a direct connection")
        self.listen = not self._through_transaction_pooler if listen is None else listen
        if doorbell and (wake != "one" or listen is False):
            raise ValueError("doorbell=True needs wake='one' and a waiting connection (listen not False): "
                             "without one the worker polls its wake marker")
        self.doorbell = doorbell is not False and wake == "one" and self.listen
        self._doorbell_refused = False
        self._first_version = 0  # where a replacing waiting connection's counter starts
        self._conninfo = url
        # for messages: never the URL itself, it may carry a password
        self._where = f"{settings.get('host', 'localhost')}:{settings.get('port', 5432)}/{settings.get('dbname', '')}"
        self._connect_kwargs: dict[str, Any] = {"row_factory": dict_row}
        if "application_name" not in settings:
            self._connect_kwargs["application_name"] = application_name
        if "connect_timeout" not in settings:
            self._connect_kwargs["connect_timeout"] = 5
        if self._through_transaction_pooler:
            self._connect_kwargs["prepare_threshold"] = None
        self._pool = ConnectionPool(
            url, min_size=min_connections, max_size=max_connections,
            kwargs={"autocommit": True, **self._connect_kwargs}, configure=_configure_connection,
            timeout=10.0, reconnect_timeout=retry_seconds, name="tasks", open=False,
        )
        self._pool.open(wait=False)
        self._listener: WakeSource | None = None
        self._listener_lock = threading.Lock()
        self._local = threading.local()
        self._closed = False
        self._idle = IdleState()

    # -- calling the SQL functions -------------------------------------------------------------------
    def _rows(self, function: str, **params: Any) -> list[Row]:
        function, params = self._route(function, params)
        return self._run(_rows_query(function, tuple(params)), _adapt(params), lambda cur: cur.fetchall())

    def _value(self, function: str, **params: Any) -> Any:
        function, params = self._route(function, params)
        return self._run(_value_query(function, tuple(params)), _adapt(params), lambda cur: cur.fetchone()["value"])

    def _run(self, query: Any, params: dict[str, Any], fetch: Callable[[psycopg.Cursor], T]) -> T:
        """One autocommit statement. When the server is away (restart, terminated backend, network) retry
        with backoff for up to ``retry_seconds``: the worker's lease keeps its task safe meanwhile."""

        def statement() -> T:
            with self._pool.connection() as conn:
                return fetch(conn.execute(query, params))

        return retry_call(statement, self._retry_policy, event="postgres_unavailable", log=log,
                          give_up=self._closed_reason)

    def _closed_reason(self) -> str | None:
        return "the store is closed" if self._closed else None

    def add_task(self, task: NewTask) -> str:
        try:
            return super().add_task(task)
        except psycopg.errors.UniqueViolation:
            raise TaskRejected(f"task id {task.id} already exists") from None
        except psycopg.errors.IntegrityError as exc:  # a check such as the id length limit
            raise TaskRejected(str(exc).strip().splitlines()[0]) from None

    # -- schema --------------------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Apply the pending migrations (only ``--migrate-only`` and ``tasks migrate`` call this)."""
        return self._with_own_connection(self._migrate)

    def pending_migrations(self) -> list[Migration]:
        """What ``migrate`` would apply, without changing anything (``--dry-run``)."""
        return self._with_own_connection(lambda conn: self._pending(conn, self._tables(conn)["has_migrations"]))

    def check_schema(self) -> None:
        """What workers and read-only commands do instead of migrating: raise NoTasksTable or SchemaOutdated
        (whose messages name the versions and the command to migrate) unless every migration is applied."""
        if self.access_token is not None:
            self._check_token_schema()
            return

        def check(conn: psycopg.Connection) -> None:
            tables = self._tables(conn)
            self._refuse_reigh_database(conn)
            if not tables["has_tasks"]:
                raise NoTasksTable(self._where_schema(conn))
            if not self._pending(conn, tables["has_migrations"]):
                return
            needed = expected_schema_version()
            present = max(self._applied(conn), default=0) if tables["has_migrations"] else 0
            if tables["has_version_function"]:
                present = max(present, conn.execute(self._queries["function_schema_version"]).fetchone()["version"])
            if present < needed:
                raise SchemaOutdated(self._where_schema(conn), present, needed)

        self._with_own_connection(check)

    def _check_token_schema(self) -> None:
        """A token worker's role may read nothing but the user_* functions: ask them for the version (which
        also checks the token)."""
        expected = expected_schema_version()
        try:
            version = int(self._value("tasks_schema_version"))
        except psycopg.errors.UndefinedFunction as exc:
            raise SchemaOutdated(self._where, 0, expected, reason="the access-token functions are missing") from exc
        except psycopg.errors.InvalidAuthorizationSpecification as exc:
            raise StoreUnavailable(f"Postgres at {self._where} refused the access token: "
                                   f"{exc.diag.message_primary}") from exc
        except RETRYABLE as exc:
            raise StoreUnavailable(f"cannot reach Postgres at {self._where}: {str(exc).strip()}") from exc
        if version < expected:
            raise SchemaOutdated(self._where, version, expected)

    def _with_own_connection(self, action: Callable[[psycopg.Connection], T]) -> T:
        # its own connection: an unreachable server is reported at once, not after the pool's timeout
        try:
            with psycopg.connect(self._conninfo, autocommit=True, **self._connect_kwargs) as conn:
                _configure_connection(conn)
                return action(conn)
        except psycopg.Error as exc:
            if exc.sqlstate:  # the server answered (no schema to create in, a refused password): say what it said
                raise StoreUnavailable(f"Postgres at {self._where}: {exc.sqlstate}: {exc.diag.message_primary}"
                                       ) from exc
            raise StoreUnavailable(f"cannot reach Postgres at {self._where}: {str(exc).strip()}") from exc

    def _tables(self, conn: psycopg.Connection) -> dict[str, bool]:
        return conn.execute(self._queries["schema_tables"]).fetchone()

    def _applied(self, conn: psycopg.Connection) -> list[int]:
        return [row["version"] for row in conn.execute(self._queries["applied_migrations"])]

    def _pending(self, conn: psycopg.Connection, has_migrations_table: bool) -> list[Migration]:
        done = set(self._applied(conn)) if has_migrations_table else set()
        return [m for m in list_migrations("postgres", self.MIGRATIONS) if m.version not in done]

    def _refuse_reigh_database(self, conn: psycopg.Connection) -> None:
        """This store's own migrations rewrite a tasks table; on Reigh's they would break Reigh (002's uuid[]
        dependant_on, 003's workers, 007's tokens). open_store opens a ReighGuestStore there instead."""
        if conn.execute(self._queries["reigh_database"]).fetchone()["reigh"]:
            raise StoreUnavailable(f"{self._where_schema(conn)} is a Reigh database: this worker runs there only "
                                   "as a guest (ReighGuestStore, which open_store picks by itself; docs/reigh.md), "
                                   "and applied nothing")

    def _where_schema(self, conn: psycopg.Connection) -> str:
        schema = conn.execute(self._queries["current_schema"]).fetchone()["schema"]
        return f"{self._where} (schema {schema})"

    def _migrate(self, conn: psycopg.Connection) -> list[str]:
        q = self._queries
        applied_now: list[str] = []
        self._refuse_reigh_database(conn)
        conn.execute(q["lock_migrations"])
        try:
            conn.execute(q["create_migrations_table"])
            # One transaction per migration: a value that one adds to the user's status enum can only be
            # used after it commits. A failed migration leaves the earlier ones applied and recorded.
            for migration in self._pending(conn, True):
                try:
                    with conn.transaction():
                        conn.execute(migration.sql)  # no parameters: sent as one multi-statement query
                        conn.execute(q["record_migration"], {"version": migration.version, "name": migration.name})
                except psycopg.Error as exc:
                    if isinstance(exc, RETRYABLE) and not exc.sqlstate:
                        raise  # the connection itself: "cannot reach" (see _with_own_connection)
                    done = ", ".join(applied_now) or "none"
                    raise StoreUnavailable(
                        f"migration {migration.label} failed and was rolled back ({exc.sqlstate}: "
                        f"{exc.diag.message_primary}); applied before it in this run: {done}") from exc
                applied_now.append(migration.label)
            if applied_now:
                conn.execute(q["apply_security"])
        finally:
            if not conn.broken:
                conn.execute(q["unlock_migrations"])
        if applied_now:
            log.info("migrations_applied", migrations=applied_now)
        return applied_now

    def schema_version(self) -> int:
        return int(self._run(self._queries["schema_version"], {}, lambda cur: cur.fetchone()["version"]))

    # -- wake-up -------------------------------------------------------------------------------------
    def wait_for_change(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Wake-up by the waiting connection (LISTEN, or the worker's doorbell). Each thread remembers the
        last change it saw, so a change between two calls is not missed. Wake-one, once the store claims or waits as a worker: only what concerns that worker
        (it was chosen for a row, its row was cancelled or deleted). Without a waiting connection (transaction
        pooler, server away) it reports a possible change every second and the caller looks at the table."""
        listener = self._ensure_listener()
        if listener is None or not listener.connected:
            wait = min(timeout, FALLBACK_POLL_SECONDS)
            if stop is not None:
                return not stop.wait(wait)
            time.sleep(wait)
            return True
        seen = getattr(self._local, "seen", None)
        if seen is None:
            seen = listener.version
        now = listener.wait_newer_than(seen, timeout, stop)
        self._local.seen = now
        return now > seen

    def wake_waiters(self) -> None:
        """After setting a stop event: its waiter in wait_for_change returns now, not at its next check."""
        listener = self._listener
        if listener is not None:
            listener.interrupt()

    def claim_next_task(self, worker_id: str, **kwargs: Any) -> Task | None:
        if self.wake == "one":
            self._own_channel(worker_id, wait=False)  # a cancel of the claimed row reaches its heartbeat
        return super().claim_next_task(worker_id, **kwargs)

    def _wake_listener(self, worker_id: str) -> WakeSource | None:
        return self._own_channel(worker_id, wait=True)

    def _own_channel(self, worker_id: str, *, wait: bool) -> WakeSource | None:
        """From here on only what concerns this worker wakes it: its doorbell, or its own LISTEN channel."""
        if self.doorbell and not self._doorbell_refused:
            doorbell = self._ensure_doorbell(worker_id)
            if doorbell is not None:
                if wait:
                    doorbell.wait_until_connected(LISTEN_CONNECT_WAIT_SECONDS)
                if doorbell.refused is None:
                    return doorbell
                self._doorbell_refused = True  # LISTEN instead, on a new connection (the doorbell's is closed)
                with self._listener_lock:
                    if self._listener is doorbell:
                        self._listener = None
                        self._first_version = doorbell.version + 1
        listener = self._ensure_listener()
        if not isinstance(listener, ChangeListener):
            return listener
        if self._idle.channel is None:
            self._idle.channel = str(self._value("tasks_worker_channel", p_worker_id=worker_id))
        listener.listen(self._idle.channel, LISTEN_CONNECT_WAIT_SECONDS if wait else 0, instead_of=CHANNEL)
        return listener

    def _ensure_doorbell(self, worker_id: str) -> Doorbell | None:
        with self._listener_lock:
            current = self._listener
            if isinstance(current, Doorbell) or self._closed:
                return current if isinstance(current, Doorbell) else None
            # the doorbell replaces a LISTEN connection opened before the worker id was known: still one
            # waiting connection; its counter continues above the old one, so no waiter misses a change
            first_version = 0
            if current is not None:
                first_version = current.version + 1
                current.close()
            self._listener = Doorbell(self._conninfo, self._connect_kwargs, worker_id, access_token=self.access_token,
                                      first_version=first_version)
            return self._listener

    def _ensure_listener(self) -> WakeSource | None:
        if not self.listen:
            return None
        with self._listener_lock:
            if self._listener is None and not self._closed:
                schema = self._run(self._queries["current_schema"], {}, lambda cur: cur.fetchone()["schema"])
                # every change, until a wake-one store learns its worker id (_own_channel)
                self._listener = ChangeListener(self._conninfo, self._connect_kwargs, (CHANNEL,), schema,
                                                first_version=self._first_version)
                self._listener.wait_until_connected(LISTEN_CONNECT_WAIT_SECONDS)
            return self._listener

    def close(self) -> None:
        self._closed = True
        with self._listener_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        self._pool.close()


class _JsonAsText(Loader):
    """json/jsonb arrive as their text and are decoded by ``Task`` (its limits and messages apply). Decoded
    by the driver, a value nested too deeply raised while fetching a claim that had already committed: the
    row sat In Progress, unseen, until its leases ran out."""

    def load(self, data: Any) -> str:
        text = bytes(data).decode("utf-8")
        # A JSON string holds the text itself: the double-encoded params some clients send are read as
        # params text, as every other client of the table reads them.
        return json.loads(text) if text.startswith('"') else text


def _configure_connection(conn: psycopg.Connection) -> None:
    # One timestamp form across backends: timestamptz values arrive in UTC.
    conn.execute("SET TIME ZONE 'UTC'")
    # An adopted table's uuid columns (id, dependant_on, project_id) arrive as text, like every other backend's.
    conn.adapters.register_loader("uuid", TextLoader)
    for name in ("json", "jsonb"):
        conn.adapters.register_loader(name, _JsonAsText)


def _adapt(params: dict[str, Any]) -> dict[str, Any]:
    """Objects, and lists of objects, go as jsonb; other lists (ids, names) stay Postgres arrays."""
    return {key: Jsonb(value) if _is_json(value) else value for key, value in params.items()}


def _is_json(value: Any) -> bool:
    return isinstance(value, dict) or (isinstance(value, list) and any(isinstance(item, dict) for item in value))


def _arguments(names: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("{} => {}").format(sql.Identifier(n), sql.Placeholder(n)) for n in names)


# Rendered once per (function, argument names): composing on every call was a tenth of a claim's CPU.
@cache
def _rows_query(function: str, names: tuple[str, ...]) -> str:
    return sql.SQL("SELECT * FROM {}({})").format(sql.Identifier(function), _arguments(names)).as_string(None)


@cache
def _value_query(function: str, names: tuple[str, ...]) -> str:
    return sql.SQL("SELECT {}({}) AS value").format(sql.Identifier(function), _arguments(names)).as_string(None)
