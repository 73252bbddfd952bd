"""Insert → claim latency on an idle SQLite worker: our wake-up (PRAGMA data_version) vs plain polling.

Runs a real `worker.py` process (default poll interval 10 s) and times each row from its created_at to
its generation_started_at (both from SQLite's clock). The bare alternative is a loop that claims, and
sleeps a poll interval when the queue is empty; it is measured at a short interval to keep the run
short — its latency grows linearly with the interval (about half of it on average).

    python benchmarks/sqlite_pickup_latency.py [--rows 50]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.pickup import bare_poller, measure_pickup, p95  # noqa: E402
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
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py"), "--db-file", str(db), "--main-output-dir", f"{tmp}/out",
             "--poll-interval", "10", "--log-format", "json"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        )
        try:
            time.sleep(3)  # imports done, worker idle
            ours = measure_pickup(store, rows, 0.3)
        finally:
            worker.terminate()
            worker.wait(timeout=30)

        bare_db = Path(tmp) / "bare.db"
        bare_store = SqliteTaskStore(bare_db)
        bare_store.migrate()
        stop = threading.Event()
        poller = threading.Thread(target=bare_poller, args=(lambda: SqliteTaskStore(bare_db), bare_interval, stop),
                                  daemon=True)
        poller.start()
        time.sleep(0.5)
        bare = measure_pickup(bare_store, bare_rows, bare_interval)
        stop.set()

    ours_median, bare_median = statistics.median(ours), statistics.median(bare)
    print(f"worker.py wake-up (poll interval 10 s): n={len(ours)} median={ours_median * 1000:.1f} ms "
          f"p95={p95(ours) * 1000:.1f} ms max={max(ours) * 1000:.1f} ms")
    print(f"bare polling loop (interval {bare_interval:g} s): n={len(bare)} median={bare_median * 1000:.1f} ms "
          f"p95={p95(bare) * 1000:.1f} ms")
    print(f"ratio bare/ours (median): {bare_median / ours_median:.1f}x at a {bare_interval:g} s interval; "
          f"a 10 s poll would be ~{10 / bare_interval:.0f}x worse again")
    print(f"target median < 100 ms: {'met' if ours_median < 0.1 else 'NOT met'}")


if __name__ == "__main__":
    main()
