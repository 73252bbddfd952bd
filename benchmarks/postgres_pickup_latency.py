"""Insert → claim latency on an idle Postgres worker: its wake-up (the doorbell, migration 027; LISTEN
before it) vs polling at the default interval (10 s).

Runs a real `worker.py --db-url ...` process (poll interval 10 s) and times each row from its created_at to
its generation_started_at (both from the server's clock). The bare alternative is a loop that claims and,
when the queue is empty, sleeps the poll interval; rows arrive at random points of its cycle.

The worker is measured on both table shapes in the same run (--shapes): ours, and the older web app's
uuid/enum table adopted in place.

    python benchmarks/postgres_pickup_latency.py [--rows 50] [--bare-rows 6] [--bare-interval 10] [--shapes ours,adopted]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.pg_schema import DEFAULT_URL, SHAPES, fresh_schema  # noqa: E402
from benchmarks.pickup import measure_bare_pickup, measure_worker_pickup, report  # noqa: E402
from source.db.postgres import PostgresTaskStore  # noqa: E402


@click.command()
@click.option("--rows", default=50, show_default=True)
@click.option("--bare-rows", default=6, show_default=True)
@click.option("--bare-interval", default=10.0, show_default=True, help="Poll interval of the bare loop (s).")
@click.option("--shapes", default=",".join(SHAPES), show_default=True,
              help="Table shapes to measure: ours, adopted (the web app's uuid/enum table).")
@click.option("--url", default=DEFAULT_URL, show_default=True, help="Admin URL; a fresh schema is made per run.")
def main(rows: int, bare_rows: int, bare_interval: float, shapes: str, url: str) -> None:
    chosen = [shape for shape in shapes.split(",") if shape]
    if not chosen or not set(chosen) <= set(SHAPES):
        raise click.BadParameter(f"shapes are {', '.join(SHAPES)}", param_hint="--shapes")
    worker_runs = {}
    for shape in chosen:
        with fresh_schema(url, shape) as schema_url, tempfile.TemporaryDirectory() as tmp:
            store = PostgresTaskStore(schema_url)
            worker_runs[shape] = measure_worker_pickup(store, ["--db-url", schema_url], f"{tmp}/out", rows)
            store.close()

    with fresh_schema(url) as schema_url:
        store = PostgresTaskStore(schema_url)
        bare = measure_bare_pickup(store, lambda: PostgresTaskStore(schema_url), bare_rows, bare_interval)
        store.close()

    medians = {}
    for shape, latencies in worker_runs.items():
        medians[shape], bare_median = report(f"worker.py wake-up (doorbell), {shape} table (poll interval 10 s)",
                                             latencies, bare, bare_interval)
        print(f"{shape}: ratio bare/worker (median): {bare_median / medians[shape]:.0f}x; "
              f"target median < 50 ms: {'met' if medians[shape] < 0.05 else 'NOT met'}")
    if set(SHAPES) <= set(medians):
        print(f"adopted / ours (median): {medians['adopted'] / medians['ours']:.2f}x")


if __name__ == "__main__":
    main()
