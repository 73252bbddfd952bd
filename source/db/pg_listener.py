"""LISTEN on a dedicated Postgres connection: a change counter that idle threads wait on, reconnecting
with backoff when the server goes away (a reconnect counts as a change: notifications may be lost)."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import structlog

log = structlog.get_logger(__name__)

CHANNEL = "tasks_changed"
NOTIFY_POLL_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 5.0
STOP_CHECK_SECONDS = 0.005


class ChangeListener:
    def __init__(self, conninfo: str, connect_kwargs: dict[str, Any], listen_sql: str, schema: str) -> None:
        self._conninfo = conninfo
        self._connect_kwargs = connect_kwargs
        self._listen_sql = listen_sql
        self._schema = schema
        self._version = 0
        self._connected = False
        self._condition = threading.Condition()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)
        self._thread.start()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def version(self) -> int:
        with self._condition:
            return self._version

    def wait_until_connected(self, timeout: float) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: self._connected or self._stopped.is_set(), timeout)

    def wait_newer_than(self, seen: int, timeout: float, stop: threading.Event | None) -> int:
        """Wait until the counter passes ``seen`` (or ``timeout``/``stop``); return the counter."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._version <= seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (stop is not None and stop.is_set()) or self._stopped.is_set():
                    break
                # short slices: a stop event set by another thread is seen within 5 ms (a heartbeat
                # thread is stopped after every task, so this is on the per-task path)
                self._condition.wait(min(remaining, STOP_CHECK_SECONDS))
            return self._version

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=2 * NOTIFY_POLL_SECONDS + 1)

    def _bump(self) -> None:
        with self._condition:
            self._version += 1
            self._condition.notify_all()

    def _set_connected(self, value: bool) -> None:
        with self._condition:
            self._connected = value
            self._condition.notify_all()

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopped.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, **self._connect_kwargs) as conn:
                    conn.execute(self._listen_sql)
                    self._set_connected(True)
                    if backoff > 0.1:
                        log.info("listen_reconnected", channel=CHANNEL)
                    backoff = 0.1
                    self._bump()  # anything may have happened while we were not listening
                    while not self._stopped.is_set():
                        for notify in conn.notifies(timeout=NOTIFY_POLL_SECONDS):
                            if notify.payload == self._schema:
                                self._bump()
            except psycopg.Error as exc:
                self._set_connected(False)
                if self._stopped.is_set():
                    return
                log.warning("listen_connection_lost", error=str(exc).strip(), retry_in=backoff)
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        self._set_connected(False)
