"""Claim time with 100,000 rows the claim must not take, against an empty queue, on both backends in one run:
rows in retry back-off (run_after in the future) and rows blocked on an unfinished dependency, each older than
the one ready row, so an ordered walk that filters them would step over every one. Prints the median claim
(and has_claimable_task) time and the ratio to the empty queue; target <= 1.5x.

    python benchmarks/claim_flat.py [--rows 100000] [--claims 200] [--pg-url URL]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.pg_schema import DEFAULT_URL, fresh_schema  # noqa: E402
from source.db.models import NewTask  # noqa: E402
from source.db.postgres import PostgresTaskStore  # noqa: E402
from source.db.sqlite import SqliteTaskStore  # noqa: E402

# rows the claim must skip, inserted an hour ago (ahead of the ready row in queue order)
SERIES = "WITH RECURSIVE g(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM g WHERE value < :rows) "
SQLITE_FILL = {
    "back-off": SERIES + "INSERT INTO tasks (id, task_type, params, status, run_after, created_at, updated_at) "
                "SELECT 'b' || value, 'ping', '{}', 'Queued', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+1 day'), "
                "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 hour'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                "FROM g",
    "blocked": SERIES + "INSERT INTO tasks (id, task_type, params, status, dependant_on, created_at, updated_at) "
               "SELECT 'd' || value, 'ping', '{}', 'Queued', 'unfinished', "
               "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 hour'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
               "FROM g",
}
PG_FILL = {
    "back-off": "INSERT INTO tasks (id, task_type, params, status, run_after, created_at) "
                "SELECT 'b' || g, 'ping', '{}'::jsonb, 'Queued', now() + interval '1 day', "
                "now() - interval '1 hour' + g * interval '1 microsecond' FROM generate_series(1, %(rows)s) AS g",
    "blocked": "INSERT INTO tasks (id, task_type, params, status, dependant_on, created_at) "
               "SELECT 'd' || g, 'ping', '{}'::jsonb, 'Queued', 'unfinished', "
               "now() - interval '1 hour' + g * interval '1 microsecond' FROM generate_series(1, %(rows)s) AS g",
}


def _claim_once(store: Any) -> tuple[float, float]:
    """Seconds of one has_claimable_task and one claim of the one ready row (given back afterwards, untimed)."""
    started = time.perf_counter()
    assert store.has_claimable_task()
    probed = time.perf_counter()
    task = store.claim_next_task("bench", lease_seconds=600)
    claimed = time.perf_counter()
    assert task is not None and task.id == "ready", task
    store.requeue_task(task.id, "bench", free_requeues=10**9)
    return claimed - probed, probed - started


def _measure(name: str, open_backend: Callable[[], tuple[Any, Callable[[str], None]]], rows: int,
             claims: int) -> None:
    """``open_backend()``: a fresh, migrated store and the function that adds ``rows`` rows of a kind to it.
    The empty and the full store are claimed from in turn, so both see the same machine load."""
    print(f"{name}:")
    for kind in ("back-off", "blocked"):
        (empty, _), (full, fill) = open_backend(), open_backend()
        try:
            for store in (empty, full):
                store.add_task(NewTask("ping", {}, id="ready"))
            fill(kind)
            times: dict[str, list[tuple[float, float]]] = {"empty": [], "full": []}
            for _ in range(claims):
                times["empty"].append(_claim_once(empty))
                times["full"].append(_claim_once(full))
        finally:
            empty.close()
            full.close()
        (claim_e, probe_e), (claim_f, probe_f) = (
            (statistics.median(t[0] for t in times[k]) * 1000, statistics.median(t[1] for t in times[k]) * 1000)
            for k in ("empty", "full"))
        print(f"  {rows:,} rows {kind:<8}  claim {claim_f:6.3f} ms vs empty {claim_e:6.3f} ms = {claim_f / claim_e:4.2f}x"
              f"   has_claimable_task {probe_f:6.3f} ms vs {probe_e:6.3f} ms = {probe_f / probe_e:4.2f}x")


@click.command()
@click.option("--rows", type=int, default=100_000, show_default=True)
@click.option("--claims", type=int, default=200, show_default=True)
@click.option("--pg-url", default=DEFAULT_URL, show_default=True)
def main(rows: int, claims: int, pg_url: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        made = iter(range(10**6))

        def sqlite_backend() -> tuple[SqliteTaskStore, Callable[[str], None]]:
            store = SqliteTaskStore(Path(folder) / f"tasks{next(made)}.db")
            store.migrate()

            def fill(kind: str) -> None:
                conn = store._conn()
                conn.execute(SQLITE_FILL[kind], {"rows": rows})
                conn.execute("ANALYZE")
            return store, fill

        _measure("SQLite", sqlite_backend, rows, claims)

    with ExitStack() as schemas:
        def pg_backend() -> tuple[PostgresTaskStore, Callable[[str], None]]:
            url = schemas.enter_context(fresh_schema(pg_url))

            def fill(kind: str) -> None:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(PG_FILL[kind], {"rows": rows})
                    conn.execute("VACUUM ANALYZE tasks")
            return PostgresTaskStore(url), fill

        _measure("PostgreSQL", pg_backend, rows, claims)


if __name__ == "__main__":
    main()
