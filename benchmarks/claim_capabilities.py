"""Claim cost with capability filters vs without, on SQLite and Postgres, as the queue grows: a worker of a 24 GiB
box (the lists resolve_capabilities gives for that GPU: every model that fits, the model-less task types it can
run) against an unrestricted worker, on the same queue, claims interleaved so both see the same rows.

Two queues per size: "mostly unrunnable" (99% of the rows are Wan 14B / 2.2 rows the 24 GiB box cannot run,
inserted first so they are the oldest) and "all runnable" (every row one the box can run). The filtered claim
probes one index per allowed model / model-less task type, so neither its cost nor the ratio should grow with
the rows it cannot run.

    python benchmarks/claim_capabilities.py [--sizes 10000,100000] [--claims 200] [--backends sqlite,postgres]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.pg_schema import DEFAULT_URL, fresh_schema  # noqa: E402
from source.db.models import Capabilities  # noqa: E402
from source.db.postgres import PostgresTaskStore  # noqa: E402
from source.db.sqlite import SqliteTaskStore  # noqa: E402
from source.worker.capabilities import resolve_capabilities  # noqa: E402

GPU_GB = 24.0
# (task_type, params) of rows a 24 GiB box cannot run (needs ~54-93 GiB at profile 1) and of rows it can
UNRUNNABLE = [("t2v", {"model": "t2v_2_2"}), ("t2v", {}), ("i2v_22", {"model": "i2v_2_2"})]
RUNNABLE = [("t2v", {"model": "t2v_1.3B"}), ("ping", {}), ("vace_21", {"model": "vace_1.3B"})]
SCENARIOS = {"mostly unrunnable": 0.99, "all runnable": 0.0}


def _rows(size: int, unrunnable_share: float, claims: int) -> list[tuple[str, str]]:
    bad = min(int(size * unrunnable_share), size - 2 * (claims + 10))  # runnable rows enough for every claim
    rows = [UNRUNNABLE[i % len(UNRUNNABLE)] for i in range(bad)]
    rows += [RUNNABLE[i % len(RUNNABLE)] for i in range(size - bad)]
    return [(task_type, json.dumps(params)) for task_type, params in rows]


def _measure(claim: Callable[[Capabilities], object], caps: Capabilities, claims: int) -> tuple[float, float]:
    """Median ms of unrestricted and restricted claims, alternated so both see the same queue."""
    plain, filtered = [], []
    for _ in range(10):  # warm: connections, prepared plans, caches
        claim(Capabilities())
        claim(caps)
    for _ in range(claims):
        for capabilities, times in ((Capabilities(), plain), (caps, filtered)):
            started = time.perf_counter()
            task = claim(capabilities)
            times.append((time.perf_counter() - started) * 1000)
            assert task is not None, "the queue ran out: use more rows or fewer claims"
    return statistics.median(plain), statistics.median(filtered)


def _sqlite(size: int, share: float, caps: Capabilities, claims: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteTaskStore(Path(tmp) / "tasks.db")
        store.migrate()
        conn = store._conn()
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO tasks (id, task_type, params, status, attempts, created_at, updated_at) "
            "VALUES (lower(hex(randomblob(16))), ?, ?, 'Queued', 0, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), "
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))", _rows(size, share, claims))
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        try:
            return _measure(lambda c: store.claim_next_task("bench", lease_seconds=600, capabilities=c), caps, claims)
        finally:
            store.close()


def _postgres(url: str, size: int, share: float, caps: Capabilities, claims: int) -> tuple[float, float]:
    with fresh_schema(url) as schema_url:
        with psycopg.connect(schema_url, autocommit=True) as conn:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO tasks (task_type, params) VALUES (%s, %s::jsonb)", _rows(size, share, claims))
            conn.execute("ANALYZE tasks")
        store = PostgresTaskStore(schema_url, max_connections=1)
        try:
            return _measure(lambda c: store.claim_next_task("bench", lease_seconds=600, capabilities=c), caps, claims)
        finally:
            store.close()


@click.command()
@click.option("--sizes", default="10000,100000", show_default=True)
@click.option("--claims", default=200, show_default=True, help="Claims of each kind per queue.")
@click.option("--backends", default="sqlite,postgres", show_default=True)
@click.option("--url", default=DEFAULT_URL, show_default=True, help="Admin URL; a fresh schema is made per queue.")
def main(sizes: str, claims: int, backends: str, url: str) -> None:
    caps = resolve_capabilities(None, None, GPU_GB)
    print(f"restricted worker ({GPU_GB:g} GiB): {len(caps.models or ())} models, "
          f"{len(caps.modelless_task_types or ())} model-less task types -> one index probe each")
    print(f"{'backend':<9} {'queued':>8}  {'queue':<18} {'unrestricted':>13} {'filtered':>10} {'ratio':>7}")
    for backend in backends.split(","):
        for size in (int(s) for s in sizes.split(",")):
            for scenario, share in SCENARIOS.items():
                if backend == "sqlite":
                    plain, filtered = _sqlite(size, share, caps, claims)
                else:
                    plain, filtered = _postgres(url, size, share, caps, claims)
                print(f"{backend:<9} {size:>8,}  {scenario:<18} {plain:>10.3f} ms {filtered:>7.3f} ms "
                      f"{filtered / plain:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()
