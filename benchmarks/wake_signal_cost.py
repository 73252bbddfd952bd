"""What waking one idle worker costs the server: LISTEN (migration 011) against the doorbell (027).

N idle workers wait on a throwaway cluster this script starts: each either LISTENs on its own channel, or
sleeps on its doorbell (worker_doorbell_register + worker_doorbell_wait, the SQL the worker runs). A ringer
then wakes one random worker at a fixed rate through tasks_ring_doorbell() — the dispatcher's own call, which
NOTIFYs a worker without a doorbell and cancels the sleep of one with. Per N it prints the server's CPU (all
Postgres processes, in cores) and the ring → wake latency, and the LISTEN/doorbell ratios: Postgres signals
every listening backend of the database at each NOTIFY commit, whatever the channel.

    python benchmarks/wake_signal_cost.py [--sizes 0,100,500] [--rate 80] [--seconds 8]
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import psycopg
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fleet_simulation import percentile, server_cpu_seconds  # noqa: E402
from source.db.postgres import PostgresTaskStore  # noqa: E402
from tests.pg_fixtures import throwaway_cluster  # noqa: E402


class _Waiter(threading.Thread):
    """One idle worker's waiting connection; records when each wake arrived."""

    def __init__(self, url: str, worker_id: str, design: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.worker_id, self.design, self.stop = url, worker_id, design, stop
        self.woken: list[float] = []
        self.ready = threading.Event()
        self.conn: psycopg.Connection | None = None

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            self.conn = conn
            conn.execute("INSERT INTO workers (id, status) VALUES (%s, 'running')", (self.worker_id,))
            if self.design == "listen":
                channel = conn.execute("SELECT tasks_worker_channel(%s)", (self.worker_id,)).fetchone()[0]
                conn.execute(f'LISTEN "{channel}"')
                self.ready.set()
                while not self.stop.is_set():
                    for _ in conn.notifies(timeout=0.5, stop_after=1):
                        self.woken.append(time.monotonic())
                return
            seen = conn.execute("SELECT worker_doorbell_register(%s)", (self.worker_id,)).fetchone()[0]
            self.ready.set()
            while not self.stop.is_set():
                try:
                    now = conn.execute("SELECT worker_doorbell_wait(%s, %s, 30)", (self.worker_id, seen)).fetchone()[0]
                except psycopg.errors.QueryCanceled:
                    continue
                if now != seen:
                    seen = now
                    self.woken.append(time.monotonic())


def measure(url: str, design: str, n: int, rate: float, seconds: float) -> dict[str, float]:
    stop = threading.Event()
    waiters = [_Waiter(url, f"{design}-{n}-{i}", design, stop) for i in range(n)]
    for waiter in waiters:
        waiter.start()
        time.sleep(0.005)
    for waiter in waiters:
        waiter.ready.wait(60)
    time.sleep(1.0)
    rings: list[tuple[_Waiter, float]] = []
    rng = random.Random(1)
    with psycopg.connect(url, autocommit=True) as ringer:
        server0, t0 = server_cpu_seconds(), time.monotonic()
        sent = 0
        while time.monotonic() - t0 < seconds:
            waiter = rng.choice(waiters) if waiters else None
            at = time.monotonic()
            ringer.execute("SELECT tasks_ring_doorbell(%s, 'wake')", (waiter.worker_id if waiter else "nobody",))
            if waiter is not None:
                rings.append((waiter, at))
            sent += 1
            time.sleep(max(0.0, t0 + sent / rate - time.monotonic()))
        elapsed = time.monotonic() - t0
        cores = (server_cpu_seconds() - server0) / elapsed
    time.sleep(1.0)
    latencies = []
    for waiter, at in rings:
        later = [w for w in waiter.woken if w >= at]
        latencies.append(1000 * (later[0] - at) if later else float("inf"))
        if later:
            waiter.woken.remove(later[0])
    stop.set()
    for waiter in waiters:
        if design == "doorbell" and waiter.conn is not None:
            waiter.conn.cancel_safe()
        waiter.join(5)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM workers")
    return {"rings_per_s": sent / elapsed, "server_cores": cores,
            "wake_p50_ms": percentile(latencies, 0.5), "wake_p99_ms": percentile(latencies, 0.99),
            "lost": float(sum(1 for v in latencies if v == float("inf")))}


@click.command()
@click.option("--sizes", default="0,100,500", show_default=True, help="Idle workers N.")
@click.option("--rate", default=80.0, show_default=True, help="Rings per second (one random worker each).")
@click.option("--seconds", default=8.0, show_default=True)
def main(sizes: str, rate: float, seconds: float) -> None:
    counts = [int(s) for s in sizes.split(",") if s]
    root = Path(tempfile.mkdtemp(prefix="wangp-wake-cost-"))
    try:
        with throwaway_cluster(root, max_connections=max(counts) + 50) as admin_url:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute("CREATE DATABASE wake_cost")
            url = make_conninfo(admin_url, dbname="wake_cost")
            store = PostgresTaskStore(url)
            store.migrate()
            store.close()
            print(f"{'N idle':>7} {'design':>9} {'rings/s':>8} {'Postgres cores':>15} {'wake p50 ms':>12} "
                  f"{'wake p99 ms':>12} {'lost':>5}")
            for n in counts:
                figures = {design: measure(url, design, n, rate, seconds) for design in ("listen", "doorbell")}
                for design, f in figures.items():
                    print(f"{n:>7} {design:>9} {f['rings_per_s']:>8.1f} {f['server_cores']:>15.2f} "
                          f"{f['wake_p50_ms']:>12.2f} {f['wake_p99_ms']:>12.2f} {f['lost']:>5.0f}")
                listen, bell = figures["listen"], figures["doorbell"]
                print(f"{n:>7} {'ratio':>9} {'':>8} {listen['server_cores'] / max(bell['server_cores'], 1e-3):>14.1f}x "
                      f"{listen['wake_p50_ms'] / max(bell['wake_p50_ms'], 1e-3):>11.1f}x "
                      f"{listen['wake_p99_ms'] / max(bell['wake_p99_ms'], 1e-3):>11.1f}x   (listen / doorbell)")
                sys.stdout.flush()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
