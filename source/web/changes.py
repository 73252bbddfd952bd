"""One change listener per server process, fanned out to every live-update (SSE) client.

A single thread waits on the store's own wake-up (``PRAGMA data_version`` on SQLite, LISTEN on Postgres),
reads one snapshot after each change and hands it to every client from memory: a hundred open pages cost
the database what one costs. Postgres notifies only rows becoming claimable or cancelled (not progress), so
while anyone watches, the thread also re-reads every ``refresh_seconds`` — still once per process.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog

from source.db import TaskStore
from source.web.overview import read_overview, task_json

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """Encoded once, in the listener thread: a hundred clients send the same text."""

    version: int
    overview_json: str = "{}"
    # Rows that some client follows (a task page), with their children; "null" for a missing row.
    tasks_json: dict[str, str] = field(default_factory=dict)


class ChangeHub:
    def __init__(self, store: TaskStore, *, refresh_seconds: float = 1.0, min_interval_seconds: float = 0.2) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        # Bursts of commits (a busy fleet) coalesce into one read per interval.
        self.min_interval_seconds = min_interval_seconds
        self.reads = 0  # snapshots read from the store (the load benchmark reports it)
        self._snapshot = Snapshot(0)
        self._watched: Counter[str] = Counter()
        self._subscribers = 0
        self._lock = threading.Lock()
        self._poke = threading.Event()  # a new subscriber wants a fresh snapshot now
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._published: asyncio.Event | None = None

    # -- lifecycle (called from the app's lifespan, on the event loop) ---------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._published = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="change-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- clients ------------------------------------------------------------------------------------
    async def snapshots(self, task_id: str | None = None) -> AsyncIterator[Snapshot]:
        """Every snapshot read from now on; subscribing pokes the listener, so the first comes at once."""
        assert self._published is not None, "hub not started"
        with self._lock:
            self._subscribers += 1
            if task_id:
                self._watched[task_id] += 1
        self._wake()
        seen = self._snapshot.version
        try:
            while True:
                published = self._published
                if self._snapshot.version > seen:
                    snapshot = self._snapshot
                    seen = snapshot.version
                    yield snapshot
                    continue
                await published.wait()
        finally:
            with self._lock:
                self._subscribers -= 1
                if task_id:
                    self._watched[task_id] -= 1
                    if self._watched[task_id] <= 0:
                        del self._watched[task_id]

    @property
    def subscribers(self) -> int:
        return self._subscribers

    def _wake(self) -> None:
        """Poke the listener: its wait on the store returns now (Postgres checks the event only every second
        on its own)."""
        self._poke.set()
        wake_waiters = getattr(self.store, "wake_waiters", None)
        if wake_waiters is not None:
            wake_waiters()

    # -- the one listener ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.store.wait_for_change(self.refresh_seconds, self._poke)
                self._poke.clear()
                if self._stopping.is_set():
                    break
                if not self._subscribers:
                    continue  # nobody watching: read nothing (the next subscriber pokes a fresh read)
                # Read on a change, a new subscriber, or the refresh tick (Postgres does not notify progress).
                snapshot = self._read()
            except Exception as exc:  # a database outage: clients keep the last snapshot; try again
                log.warning("snapshot_failed", error=str(exc))
                self._stopping.wait(self.refresh_seconds)
                continue
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._publish, snapshot)
            self._stopping.wait(self.min_interval_seconds)

    def _read(self) -> Snapshot:
        with self._lock:
            watched = list(self._watched)
        overview = read_overview(self.store)
        tasks: dict[str, str] = {}
        for task_id in watched:
            task = self.store.get_task(task_id)
            row = None
            if task is not None:
                row = task_json(task)
                row["children"] = [task_json(c) for c in self.store.list_child_tasks(task_id)]
            tasks[task_id] = json.dumps(row, default=str)
        self.reads += 1
        return Snapshot(self.reads, json.dumps(overview, default=str), tasks)

    def _publish(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        assert self._published is not None
        published, self._published = self._published, asyncio.Event()
        published.set()
