"""Insert → claim latency on an idle Postgres worker: LISTEN/NOTIFY wake-up vs polling at the default
interval (10 s).

Runs a real `worker.py --db-url ...` process (poll interval 10 s) and times each row from its created_at to
its generation_started_at (both from the server's clock). The bare alternative is a loop that claims and,
when the queue is empty, sleeps the poll interval; rows arrive at random points of its cycle.

    python benchmarks/postgres_pickup_latency.py [--rows 50] [--bare-rows 6] [--bare-interval 10]
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.pg_schema import DEFAULT_URL, ROOT, fresh_schema  # noqa: E402
from source.db.models import NewTask, TaskStatus  # noqa: E402
from source.db.postgres import PostgresTaskStore  # noqa: E402


def _seconds(task) -> float:
    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return (parse(task.generation_started_at) - parse(task.created_at)).total_seconds()


def _measure(store: PostgresTaskStore, rows: int, spacing: float) -> list[float]:
    latencies = []
    for _ in range(rows):
        task_id = store.add_task(NewTask("ping", {}))
        while (row := store.get_task(task_id)).status is TaskStatus.QUEUED:
            time.sleep(0.005)
        latencies.append(_seconds(row))
        while store.get_task(task_id).status is not TaskStatus.COMPLETE:
            time.sleep(0.005)
        time.sleep(random.uniform(0.0, spacing))  # arrive at a random point of the poll cycle
    return latencies


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)]


def _bare_poller(url: str, interval: float, stop: threading.Event) -> None:
    store = PostgresTaskStore(url)
    while not stop.is_set():
        task = store.claim_next_task("bare-poller", lease_seconds=60)
        if task is None:
            stop.wait(interval)
            continue
        store.complete_task(task.id, "bare-poller", output_location=None, result=None)
    store.close()


@click.command()
@click.option("--rows", default=50, show_default=True)
@click.option("--bare-rows", default=6, show_default=True)
@click.option("--bare-interval", default=10.0, show_default=True, help="Poll interval of the bare loop (s).")
@click.option("--url", default=DEFAULT_URL, show_default=True, help="Admin URL; a fresh schema is made per run.")
def main(rows: int, bare_rows: int, bare_interval: float, url: str) -> None:
    with fresh_schema(url) as schema_url, tempfile.TemporaryDirectory() as tmp:
        store = PostgresTaskStore(schema_url)
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py"), "--db-url", schema_url, "--main-output-dir", f"{tmp}/out",
             "--poll-interval", "10", "--log-format", "json"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        )
        try:
            time.sleep(3)  # imports done, worker idle and listening
            ours = _measure(store, rows, 0.3)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        store.close()

    with fresh_schema(url) as schema_url:
        store = PostgresTaskStore(schema_url)
        stop = threading.Event()
        poller = threading.Thread(target=_bare_poller, args=(schema_url, bare_interval, stop), daemon=True)
        poller.start()
        time.sleep(0.5)
        bare = _measure(store, bare_rows, bare_interval)
        stop.set()
        poller.join()
        store.close()

    ours_median, bare_median = statistics.median(ours), statistics.median(bare)
    print(f"worker.py LISTEN/NOTIFY (poll interval 10 s): n={len(ours)} median={ours_median * 1000:.1f} ms "
          f"p95={_p95(ours) * 1000:.1f} ms max={max(ours) * 1000:.1f} ms")
    print(f"bare polling loop (interval {bare_interval:g} s): n={len(bare)} median={bare_median * 1000:.1f} ms "
          f"p95={_p95(bare) * 1000:.1f} ms")
    print(f"ratio bare/ours (median): {bare_median / ours_median:.0f}x")
    print(f"target median < 50 ms: {'met' if ours_median < 0.05 else 'NOT met'}")


if __name__ == "__main__":
    main()
