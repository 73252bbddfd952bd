"""A worker's doorbell (migration 027): its second connection sleeps in ``worker_doorbell_wait`` and the
server wakes exactly that one process when the dispatcher chooses the worker or its running row is cancelled
or deleted. LISTEN would do the same job, but Postgres signals every listening backend of the database on
every NOTIFY: with hundreds of idle workers that herd, not the claims, took the database's CPU
(benchmarks/fleet_simulation.py). Same counter interface as the LISTEN connection (pg_listener.WakeSource),
so the store and its waiters do not care which one they have."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
import structlog

from source.db.pg_listener import WakeSource

log = structlog.get_logger(__name__)

# How long one wait sleeps when nothing rings: one short statement per worker per interval while idle.
DOORBELL_WAIT_SECONDS = 30.0
# Another live connection holds this worker's doorbell (a restarted worker whose old connection the server
# has not yet ended): register again this often, this many times, before LISTENing instead.
BUSY_RETRY_SECONDS = 0.2
BUSY_RETRIES = 25

_REGISTER = "SELECT worker_doorbell_register(%s) AS rung"
_WAIT = "SELECT worker_doorbell_wait(%s, %s, %s) AS rung"
# a token worker (--supabase-access-token over a direct connection): the user_* wrappers, the token first
_USER_REGISTER = "SELECT user_worker_doorbell_register(%s, %s) AS rung"
_USER_WAIT = "SELECT user_worker_doorbell_wait(%s, %s, %s, %s) AS rung"


class Doorbell(WakeSource):
    def __init__(self, conninfo: str, connect_kwargs: dict[str, Any], worker_id: str, *,
                 access_token: str | None = None, first_version: int = 0,
                 wait_seconds: float = DOORBELL_WAIT_SECONDS) -> None:
        super().__init__(conninfo, connect_kwargs, first_version=first_version, name="pg-doorbell")
        self.worker_id = worker_id
        if access_token is None:
            self._register_sql, self._wait_sql, self._key = _REGISTER, _WAIT, (worker_id,)
        else:
            self._register_sql, self._wait_sql, self._key = _USER_REGISTER, _USER_WAIT, (access_token, worker_id)
        self.wait_seconds = wait_seconds
        # why ringing cannot reach this connection (the store LISTENs instead), once the server has said so
        self.refused: str | None = None
        self._conn: psycopg.Connection | None = None
        self._rung: int | None = None
        self._start()

    def close(self) -> None:
        self._stopped.set()
        conn = self._conn
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe(timeout=2.0)  # ends the sleeping wait now (it returns, nothing is logged)
        super().close()

    def _connect(self) -> psycopg.Connection | None:
        conn = psycopg.connect(self._conninfo, autocommit=True, **self._connect_kwargs)
        try:
            rung = self._register(conn)
        except psycopg.Error as exc:
            conn.close()
            if not exc.sqlstate or isinstance(exc, psycopg.OperationalError):
                raise  # the connection or the server going away: reconnect
            # the server refused the registration itself (a role without rights to it): LISTEN instead
            return self._refuse(f"{exc.sqlstate}: {str(exc).strip().splitlines()[0]}")
        except BaseException:
            conn.close()
            raise
        if rung is None:
            conn.close()
            return None
        self._conn, self._rung = conn, rung
        return conn

    def _register(self, conn: psycopg.Connection) -> int | None:
        for _ in range(BUSY_RETRIES):
            rung = _value(conn.execute(self._register_sql, self._key))
            if rung is None:
                return self._refuse("the server may not cancel this connection's statements (the migrations' "
                                    "owner cannot signal this role's sessions)")
            if rung >= 0:
                return rung
            if self._stopped.wait(BUSY_RETRY_SECONDS):
                return None
        return self._refuse("another live connection holds this worker id's doorbell")

    def _refuse(self, reason: str) -> None:
        self.refused = reason
        log.info("doorbell_unavailable", worker_id=self.worker_id, reason=reason, instead="LISTEN")
        self._stopped.set()
        with self._condition:
            self._condition.notify_all()
        return None

    def _serve(self, conn: psycopg.Connection) -> None:
        rung = self._rung
        while not self._stopped.is_set():
            try:
                now = _value(conn.execute(self._wait_sql, (*self._key, rung, float(self.wait_seconds))))
            except psycopg.errors.QueryCanceled:
                continue  # a ring that landed outside the wait's guard: the next wait settles and reads it
            if now is None:  # the worker's row was deleted (by hand): register again, which restores it
                now = self._register(conn)
                if now is None:
                    return
            if now != rung:
                rung = now
                self._bump()


def _value(cursor: psycopg.Cursor) -> int | None:
    row = cursor.fetchone()
    value = row["rung"] if isinstance(row, dict) else row[0]
    return None if value is None else int(value)
