"""Insert → claim latency on an idle SQLite worker: our wake-up (PRAGMA data_version) vs plain polling.

Runs a real `worker.py` process (default poll interval 10 s) and times each row from its created_at to
its generation_started_at (both from SQLite's clock). The bare alternative is a loop that claims, and
sleeps a poll interval when the queue is empty; it is measured at a short interval to keep the run
short — its latency grows linearly with the interval (about half of it on average).

    python benchmarks/sqlite_pickup_latency.py [--rows 50]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.pickup import measure_bare_pickup, measure_worker_pickup, report  # noqa: E402
from source.db.sqlite import SqliteTaskStore  # noqa: E402


@click.command()
@click.option("--rows", default=50, show_default=True)
@click.option("--bare-rows", default=12, show_default=True)
@click.option("--bare-interval", default=1.0, show_default=True, help="Poll interval of the bare loop (s).")
def main(rows: int, bare_rows: int, bare_interval: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "tasks.db"
        store = SqliteTaskStore(db)
        store.migrate()
        ours = measure_worker_pickup(store, ["--db-file", str(db)], f"{tmp}/out", rows)

        bare_db = Path(tmp) / "bare.db"
        bare_store = SqliteTaskStore(bare_db)
        bare_store.migrate()
        bare = measure_bare_pickup(bare_store, lambda: SqliteTaskStore(bare_db), bare_rows, bare_interval)

    ours_median, bare_median = report("worker.py wake-up (poll interval 10 s)", ours, bare, bare_interval)
    print(f"ratio bare/ours (median): {bare_median / ours_median:.1f}x at a {bare_interval:g} s interval; "
          f"a 10 s poll would be ~{10 / bare_interval:.0f}x worse again")
    print(f"target median < 100 ms: {'met' if ours_median < 0.1 else 'NOT met'}")


if __name__ == "__main__":
    main()
