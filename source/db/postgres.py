"""Postgres task store over a direct connection (psycopg 3): many workers on one database, claims through
the SQL functions, wake-up through LISTEN/NOTIFY, reconnects with backoff.

Connection budget per worker: ``max_connections`` (default 1) for claims, heartbeats, progress and results,
plus one LISTEN connection (none behind Supabase's transaction pooler, which polls instead).
Wake-one (default): an idle worker registers in ``workers`` and only the worker the dispatcher chose is
woken, on its own channel (migration 011); wake-all (``wake="all"``): every idle worker wakes on every
insert and looks at the table (the design before 011, kept for comparison and for older schemas)."""

from __future__ import annotations

import json
import random
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

from source.db.config import NoTasksTable, SchemaOutdated, StoreUnavailable
from source.db.models import NewTask, Task, TaskRejected
from source.db.pg_listener import CHANNEL, ChangeListener
from source.db.rpc_store import Row, RpcTaskStore, expected_schema_version
from source.db.sql_files import Migration, list_migrations, load_queries
from source.db.transient import POSTGRES_OUTAGE, is_postgres_outage
from source.retry import Backoff, RetryPolicy, retry_call

log = structlog.get_logger(__name__)

T = TypeVar("T")
# Supabase's transaction pooler: no LISTEN, no prepared statements (see README).
TRANSACTION_POOLER_PORT = "6543"
FALLBACK_POLL_SECONDS = 1.0
LISTEN_CONNECT_WAIT_SECONDS = 3.0
# A statement while the server is away: 50 ms, 100 ms, ... up to 5 s between tries, for retry_seconds.
STATEMENT_BACKOFF = Backoff(first=0.05, cap=5.0)
# Behind the transaction pooler an idle worker polls its own wake marker: quick after a change, backing
# off (with jitter, so a fleet's polls spread out) to this while nothing happens.
POOLER_POLL_MIN_SECONDS = 0.05
POOLER_POLL_MAX_SECONDS = 2.0
WAKE_MODES = ("one", "all")
RETRYABLE = POSTGRES_OUTAGE


class PostgresTaskStore(RpcTaskStore):
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
    ) -> None:
        if wake not in WAKE_MODES:
            raise ValueError(f"wake must be one of {', '.join(WAKE_MODES)}, not {wake!r}")
        self.retry_seconds = retry_seconds
        self._retry_policy = RetryPolicy(STATEMENT_BACKOFF, deadline_seconds=retry_seconds,
                                         retryable=is_postgres_outage)
        self.access_token = access_token
        # A token worker's role may call only the user_* functions, which have no idle registry: it wakes on
        # every change, as before 011.
        self.wake = "all" if access_token is not None else wake
        self._queries = load_queries("postgres")
        settings = conninfo_to_dict(url)
        self._through_transaction_pooler = str(settings.get("port", "")) == TRANSACTION_POOLER_PORT
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
        self._listener: ChangeListener | None = None
        self._listener_lock = threading.Lock()
        self._local = threading.local()
        self._closed = False
        self._idle = _IdleState()

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
        return [m for m in list_migrations("postgres") if m.version not in done]

    def _where_schema(self, conn: psycopg.Connection) -> str:
        schema = conn.execute(self._queries["current_schema"]).fetchone()["schema"]
        return f"{self._where} (schema {schema})"

    def _migrate(self, conn: psycopg.Connection) -> list[str]:
        q = self._queries
        applied_now: list[str] = []
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
        """LISTEN wake-up. Each thread remembers the last change it saw, so a change between two calls
        is not missed. Wake-one, once the store claims or waits as a worker: only what concerns that worker
        (it was chosen for a row, its row was cancelled or deleted). Without a listening connection (transaction pooler, server away) it reports a
        possible change every second and the caller looks at the table."""
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
        task = super().claim_next_task(worker_id, **kwargs)
        if task is not None and self._idle.registered:
            # leave the idle set so the dispatcher skips us while we work (a wake already took us out;
            # the statement is then a no-op, but a wake cannot be told from a reconnect or a cancel)
            self._idle.registered = False
            self._value("worker_busy", p_worker_id=worker_id)
        return task

    def wait_for_work(self, worker_id: str, *, resident_model: str | None, timeout: float, poll_interval: float,
                      stop: threading.Event | None = None) -> bool:
        """The claim loop's idle wait; True means claim now. Wake-one: (re)register as idle once per poll
        interval, which also answers whether a row is claimable (the fallback when a chosen worker died),
        then sleep until the dispatcher picks this worker. Wake-all: any change, then a look at the table."""
        if self.wake == "all":
            return self.wait_for_change(timeout, stop) and self.has_claimable_task()
        idle = self._idle
        listener = None if self._through_transaction_pooler else self._own_channel(worker_id, wait=True)
        now = time.monotonic()
        if not idle.registered or now >= idle.renew_at:
            seen_before = listener.version if listener is not None else 0
            claimable = self._flag("worker_idle", p_worker_id=worker_id, p_resident_model=resident_model,
                                   p_poll_seconds=float(poll_interval))
            idle.registered, idle.renew_at = True, now + poll_interval
            idle.seen = seen_before if listener is not None else idle.seen
            if claimable:
                return True
        if listener is not None and listener.connected:
            now_version = listener.wait_newer_than(idle.seen, timeout, stop)
            woken = now_version > idle.seen
            idle.seen = now_version
        else:
            woken = self._poll_wake_marker(worker_id, timeout, stop)
        if woken:
            idle.renew_at = 0.0  # the dispatcher took us out of the idle set: back in if the claim finds nothing
        return woken

    def _poll_wake_marker(self, worker_id: str, timeout: float, stop: threading.Event | None) -> bool:
        """No LISTEN (transaction pooler, listener away): one primary-key read of this worker's wake marker per
        poll, jittered back-off between polls; never a claim."""
        idle = self._idle
        deadline = time.monotonic() + timeout
        while True:
            marker = str(self._value("worker_woken", p_worker_id=worker_id))
            if idle.marker is not None and marker != idle.marker:
                idle.marker, idle.poll = marker, POOLER_POLL_MIN_SECONDS
                return True
            idle.marker = marker
            idle.poll = min(idle.poll * 2, POOLER_POLL_MAX_SECONDS)
            pause = min(idle.poll * random.uniform(0.5, 1.0), deadline - time.monotonic())
            if pause <= 0 or (stop.wait(pause) if stop is not None else time.sleep(pause)):
                return False

    def _own_channel(self, worker_id: str, *, wait: bool) -> ChangeListener | None:
        listener = self._ensure_listener()
        if listener is None:
            return None
        if self._idle.channel is None:
            self._idle.channel = str(self._value("tasks_worker_channel", p_worker_id=worker_id))
        # from here on only what concerns this worker wakes it: no longer every insert
        listener.listen(self._idle.channel, LISTEN_CONNECT_WAIT_SECONDS if wait else 0, instead_of=CHANNEL)
        return listener

    def _ensure_listener(self) -> ChangeListener | None:
        if self._through_transaction_pooler:
            return None
        with self._listener_lock:
            if self._listener is None and not self._closed:
                schema = self._run(self._queries["current_schema"], {}, lambda cur: cur.fetchone()["schema"])
                # every change, until a wake-one store learns its worker id (_own_channel)
                self._listener = ChangeListener(self._conninfo, self._connect_kwargs, (CHANNEL,), schema)
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


class _IdleState:
    """Where this worker stands in the idle registry (one worker per store: the claim loop's thread)."""

    def __init__(self) -> None:
        self.channel: str | None = None
        self.registered = False
        self.renew_at = 0.0
        self.seen = 0
        self.marker: str | None = None
        self.poll = POOLER_POLL_MIN_SECONDS


def _configure_connection(conn: psycopg.Connection) -> None:
    # One timestamp form across backends: timestamptz values arrive in UTC.
    conn.execute("SET TIME ZONE 'UTC'")
    # An adopted table's uuid columns (id, dependant_on, project_id) arrive as text, like every other backend's.
    conn.adapters.register_loader("uuid", TextLoader)
    for name in ("json", "jsonb"):
        conn.adapters.register_loader(name, _JsonAsText)


def _adapt(params: dict[str, Any]) -> dict[str, Any]:
    return {key: Jsonb(value) if isinstance(value, dict) else value for key, value in params.items()}


def _arguments(names: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("{} => {}").format(sql.Identifier(n), sql.Placeholder(n)) for n in names)


# Rendered once per (function, argument names): composing on every call was a tenth of a claim's CPU.
@cache
def _rows_query(function: str, names: tuple[str, ...]) -> str:
    return sql.SQL("SELECT * FROM {}({})").format(sql.Identifier(function), _arguments(names)).as_string(None)


@cache
def _value_query(function: str, names: tuple[str, ...]) -> str:
    return sql.SQL("SELECT {}({}) AS value").format(sql.Identifier(function), _arguments(names)).as_string(None)
