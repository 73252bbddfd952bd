"""LISTEN on a dedicated Postgres connection: a change counter that idle threads wait on, reconnecting
with backoff when the server goes away (a reconnect counts as a change: notifications may be lost).
Wake-all listens on the shared ``tasks_changed`` channel (payload = schema); wake-one on the worker's own
channel, added once its worker id is known (``listen``)."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import structlog
from psycopg import sql

from source.db.transient import is_postgres_outage
from source.retry import Backoff, RetryPolicy, retry_call

log = structlog.get_logger(__name__)

CHANNEL = "tasks_changed"
# also how long a newly added channel may wait for its LISTEN
NOTIFY_POLL_SECONDS = 0.5
# Reconnecting the LISTEN connection: 0.1 s, 0.2 s, ... up to 5 s between tries, for as long as it takes
# (idle workers poll meanwhile); an answer that is not an outage (a refused password) ends the listener.
RECONNECT = RetryPolicy(Backoff(first=0.1, cap=5.0), retryable=is_postgres_outage)
# How often a waiter looks at its stop event on its own. Stoppers call interrupt() after setting it (the
# heartbeat after every task, the worker loop's stop, the web page's poke; store.wake_waiters()), so this
# is only the bound for one that does not. A fleet of idle threads waking every 5 ms each (the slice before
# issue 23) cost more CPU than the work; every 0.1 s, 500 simulated idle workers still took 0.7 of this
# box's two cores (benchmarks/fleet_simulation.py).
STOP_CHECK_SECONDS = 1.0


class WakeSource:
    """A change counter that idle threads wait on, fed by a thread with its own server connection that
    reconnects with backoff when the server goes away (a reconnect counts as a change: wake-ups may have been
    lost meanwhile). Subclasses open the connection (``_connect``) and feed the counter (``_serve``)."""

    def __init__(self, conninfo: str, connect_kwargs: dict[str, Any], *, first_version: int = 0,
                 name: str) -> None:
        self._conninfo = conninfo
        self._connect_kwargs = connect_kwargs
        self._version = first_version
        self._connected = False
        self._condition = threading.Condition()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _start(self) -> None:
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
                self._condition.wait(min(remaining, STOP_CHECK_SECONDS))
            return self._version

    def interrupt(self) -> None:
        """Wake every waiter now, so one whose stop event was just set returns at once."""
        with self._condition:
            self._condition.notify_all()

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
            self._on_connected(value)
            self._condition.notify_all()

    def _on_connected(self, value: bool) -> None:
        """Under the condition's lock, when the connection comes or goes."""

    def _connect(self) -> psycopg.Connection:
        raise NotImplementedError

    def _serve(self, conn: psycopg.Connection) -> None:
        """Feed the counter until stopped; raise psycopg.Error when the connection fails."""
        raise NotImplementedError

    def _run(self) -> None:
        lost = False
        while not self._stopped.is_set():
            try:
                conn = retry_call(self._connect, RECONNECT, event="listen_reconnect_failed", log=log,
                                  gave_up_event="listen_gave_up", stop=self._stopped, channel=self._thread.name)
            except psycopg.Error as exc:  # stopped, or an answer such as a refused password
                if not self._stopped.is_set():
                    log.error("listen_refused", error=str(exc).strip()[:300], channel=self._thread.name,
                              hint="no wake-ups from here on: idle waiters poll instead")
                break
            if conn is None:  # the subclass gave up on this kind of wake-up (see Doorbell)
                break
            try:
                with conn:
                    self._set_connected(True)
                    if lost:
                        log.info("listen_reconnected", channel=self._thread.name)
                    self._bump()  # anything may have happened while we were not connected
                    self._serve(conn)
            except psycopg.Error as exc:
                if self._stopped.is_set():
                    break
                log.warning("listen_connection_lost", error=str(exc).strip()[:300], channel=self._thread.name)
                lost = True
            finally:
                self._set_connected(False)


class ChangeListener(WakeSource):
    """LISTEN on the shared change channel, or on a worker's own channel once ``listen`` adds it."""

    def __init__(self, conninfo: str, connect_kwargs: dict[str, Any], channels: tuple[str, ...], schema: str,
                 *, first_version: int = 0) -> None:
        super().__init__(conninfo, connect_kwargs, first_version=first_version, name="pg-listen")
        self._channels = set(channels)
        self._listening: set[str] = set()
        self._schema = schema
        self._start()

    def listen(self, channel: str, timeout: float, *, instead_of: str | None = None) -> bool:
        """Add a channel (dropping ``instead_of``); True once the server listens on it (a NOTIFY sent
        before that is not seen)."""
        with self._condition:
            self._channels.add(channel)
            self._channels.discard(instead_of)
            return self._condition.wait_for(lambda: channel in self._listening or self._stopped.is_set(), timeout)

    def _on_connected(self, value: bool) -> None:
        if not value:
            self._listening = set()

    def _listen_new_channels(self, conn: psycopg.Connection) -> None:
        with self._condition:
            wanted, listening = set(self._channels), set(self._listening)
        for channel in sorted(wanted - listening):
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        for channel in sorted(listening - wanted):
            conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(channel)))
        if wanted != listening:
            with self._condition:
                self._listening = wanted
                self._condition.notify_all()

    def _accepts(self, notify: psycopg.Notify) -> bool:
        # the shared channel carries the schema; a worker's own channel is already per schema
        return notify.channel != CHANNEL or notify.payload == self._schema

    def _connect(self) -> psycopg.Connection:
        """A listening connection: connected, and LISTENing on every wanted channel."""
        conn = psycopg.connect(self._conninfo, autocommit=True, **self._connect_kwargs)
        try:
            self._listen_new_channels(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _serve(self, conn: psycopg.Connection) -> None:
        while not self._stopped.is_set():
            for notify in conn.notifies(timeout=NOTIFY_POLL_SECONDS, stop_after=1):
                if self._accepts(notify):
                    self._bump()
            self._listen_new_channels(conn)
