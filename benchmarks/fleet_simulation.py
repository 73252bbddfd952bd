"""A simulated fleet on one Postgres: N workers (the real PostgresTaskStore, its wake-up code and the real
Heartbeat thread; no model: claim, sleep a drawn duration while reporting progress, complete) against a
throwaway cluster this script starts, for three designs side by side: wake-all (before 011: every idle worker
looks at the table on every change), wake-one by LISTEN on each worker's channel (011) and wake-one by the
worker's doorbell (027, the default).

Per N and design it prints: server connections per worker, claim calls per inserted row (a burst of N rows
into N idle workers, then steady arrivals at ~30 % utilisation), pickup p50/p99 (created_at → claimed_at,
both server clock), database transactions/s idle and under load (pg_stat_database.xact_commit: every
autocommit statement is one), heartbeat writes/s, the CPU the whole box spent (server and simulated workers
share it) — and each design's ratio to the doorbell's.

Workers are threads spread over a few processes (one process per worker would not fit this box).

    python benchmarks/fleet_simulation.py [--sizes 10,100,500] [--modes all,listen,doorbell] [--processes 4]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import click
import psycopg
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from source.db.models import NewTask  # noqa: E402
from source.db.postgres import PostgresTaskStore  # noqa: E402
from source.handlers.context import CancelSignal, ProgressState  # noqa: E402
from source.worker.heartbeat import Heartbeat  # noqa: E402
from source.worker.settings import WorkerSettings  # noqa: E402
from tests.pg_fixtures import throwaway_cluster  # noqa: E402

# what the fleet runs with: the worker's defaults (housekeeping every 5 s, a beat every 15 s; with tasks of
# about a second the writes are the progress flushes)
LEASE_SECONDS = 60.0
POLL_SECONDS = 10.0
# a simulated task reports progress this often (a denoising step of a fast model; each report is a Python
# wake-up on this shared box, not a database write: the heartbeat coalesces them)
PROGRESS_STEP_SECONDS = 0.25
# between two simulated workers starting, in each process
START_SPACING_SECONDS = 0.1
# today's design flushed progress every second; 011's heartbeat coalesces it (source/worker/heartbeat.py)
BASELINE_PROGRESS_FLUSH_SECONDS = 1.0


@dataclass(frozen=True)
class Plan:
    mode: str
    workers: int
    processes: int
    mean_task_seconds: float
    idle_seconds: float
    steady_seconds: float
    utilisation: float


class _Counters:
    def __init__(self, ctx: mp.context.BaseContext) -> None:
        self.claims = ctx.Value("q", 0)
        self.heartbeats = ctx.Value("q", 0)
        self.ready = ctx.Value("i", 0)
        self.busy_ms = ctx.Value("q", 0)

    @staticmethod
    def add(value, n: int = 1) -> None:
        with value.get_lock():
            value.value += n


# the store each design runs with: wake-all had a pool of up to 4 connections; 011 and 027 one (plus the
# waiting connection in all three: LISTEN, or the doorbell)
STORE_OPTIONS = {"all": {"wake": "all", "max_connections": 4},
                 "listen": {"wake": "one", "doorbell": False, "max_connections": 1},
                 "doorbell": {"wake": "one", "doorbell": True, "max_connections": 1}}


class _CountingStore(PostgresTaskStore):
    """The real store, counting the calls the figures are about."""

    def __init__(self, url: str, counters: _Counters, mode: str) -> None:
        super().__init__(url, application_name="fleet-sim", **STORE_OPTIONS[mode])
        self.counters = counters

    def claim_next_task(self, worker_id, **kwargs):
        _Counters.add(self.counters.claims)
        return super().claim_next_task(worker_id, **kwargs)

    def heartbeat(self, task_id, worker_id, **kwargs):
        _Counters.add(self.counters.heartbeats)
        return super().heartbeat(task_id, worker_id, **kwargs)


@dataclass
class _LoopState:
    claim: bool = True
    ready: bool = False
    next_housekeeping: float = 0.0


def _simulated_worker(url: str, plan: Plan, worker_id: str, counters: _Counters, stop: threading.Event) -> None:
    """The claim loop of source/worker/loop.py without a model: claim, run (heartbeat + progress), complete;
    idle: the store's wait (wake-one) or wait_for_change + has_claimable_task (wake-all); housekeeping on the
    worker's own schedule (touch, expired leases, dependency cascade)."""
    store = _CountingStore(url, counters, plan.mode)
    settings = WorkerSettings(worker_id=worker_id, poll_interval=POLL_SECONDS, lease_seconds=LEASE_SECONDS)
    rng = random.Random(worker_id)
    state = _LoopState()
    backoff = 0.1
    try:
        while not stop.is_set():
            try:
                _one_round(store, plan, settings, counters, stop, rng, state)
                backoff = 0.1
            except Exception:  # the server too busy to answer in time: back off, as the worker loop does
                stop.wait(backoff)
                backoff = min(backoff * 2, POLL_SECONDS)
    finally:
        store.close()


def _one_round(store: _CountingStore, plan: Plan, settings: WorkerSettings, counters: _Counters,
               stop: threading.Event, rng: random.Random, state: _LoopState) -> None:
    worker_id = settings.worker_id
    now = time.monotonic()
    if now >= state.next_housekeeping:
        state.next_housekeeping = now + settings.housekeeping_interval
        store.touch_worker(worker_id, resident_model=None, current_task_id=None)
        # 025: one worker per interval does the fleet's housekeeping (the worker loop's _my_turn)
        if plan.mode == "all" or store.housekeeping_turn(
                "leases", interval_seconds=settings.housekeeping_turn_seconds, worker_id=worker_id):
            store.reclaim_expired_leases()
            store.fail_orphaned_dependants()
    task = store.claim_next_task(worker_id, lease_seconds=LEASE_SECONDS) if state.claim else None
    if task is not None:
        seconds = rng.expovariate(1 / plan.mean_task_seconds)
        flush = BASELINE_PROGRESS_FLUSH_SECONDS if plan.mode == "all" else None
        _run_task(store, task.id, worker_id, seconds, flush)
        _Counters.add(counters.busy_ms, int(seconds * 1000))
        state.claim = True
        return
    if not state.ready:
        state.ready = True
        _Counters.add(counters.ready)
    if plan.mode != "all":
        state.claim = store.wait_for_work(worker_id, resident_model=None, timeout=1.0, poll_interval=POLL_SECONDS,
                                          stop=stop)
    else:  # today's loop: any change, a look at the table; a claim at every housekeeping
        state.claim = (store.wait_for_change(1.0, stop=stop) and store.has_claimable_task()) or (
            time.monotonic() >= state.next_housekeeping)


def _run_task(store: PostgresTaskStore, task_id: str, worker_id: str, seconds: float, flush: float | None) -> None:
    progress = ProgressState()
    kwargs = {} if flush is None else {"progress_flush_seconds": flush}
    beat = Heartbeat(store, task_id, worker_id, lease_seconds=LEASE_SECONDS, interval=LEASE_SECONDS / 4,
                     cancel=CancelSignal(), progress=progress, **kwargs)
    beat.start()
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        progress.report(min(elapsed / seconds, 0.99))
        time.sleep(min(PROGRESS_STEP_SECONDS, seconds - elapsed))
    beat.stop()
    store.complete_task(task_id, worker_id, output_location=None, result=None)


def _process_main(url: str, plan: Plan, ids: list[str], counters: _Counters, stop_event) -> None:
    stop = threading.Event()
    threads = [threading.Thread(target=_simulated_worker, args=(url, plan, wid, counters, stop), daemon=True)
               for wid in ids]
    for thread in threads:
        thread.start()
        # A connection storm at start is not what is measured: 500 workers in ~6 s (0.05 s apart per process)
        # timed out connects on this 2-core box, and a connect that times out just as the server finishes it
        # leaves a session open until Python collects it (counted as a third connection of some workers).
        time.sleep(START_SPACING_SECONDS)
    stop_event.wait()
    stop.set()
    for thread in threads:
        thread.join(10)


# -- measuring ------------------------------------------------------------------------------------------
def _commits(admin: psycopg.Connection, db: str) -> int:
    admin.execute("SELECT pg_stat_clear_snapshot()")
    return int(admin.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (db,)).fetchone()[0])


def _connections(admin: psycopg.Connection, db: str) -> int:
    return int(admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = "
                             "'fleet-sim'", (db,)).fetchone()[0])


def _pickups(conn: psycopg.Connection, since_row: int) -> list[float]:
    rows = conn.execute("SELECT extract(epoch FROM claimed_at - created_at) FROM tasks WHERE claimed_at IS NOT NULL"
                        " AND (params ->> 'n')::int >= %s", (since_row,)).fetchall()
    return [float(r[0]) for r in rows]


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole box since boot (Linux /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def server_cpu_seconds() -> float:
    """CPU time used so far by every Postgres process on the box (the throwaway cluster's backends; others
    idle)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # a backend that just ended
            continue
        if text[text.index("(") + 1:text.rindex(")")] == "postgres":
            fields = text[text.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _busy_percent(before: tuple[int, int]) -> float:
    after = _cpu_ticks()
    return 100.0 * (after[0] - before[0]) / max(1, after[1] - before[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_plan(admin_url: str, plan: Plan) -> dict[str, float]:
    db = f"fleet_{plan.mode}_{plan.workers}_{int(time.time() * 1000) % 10**8}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    url = make_conninfo(admin_url, dbname=db)
    producer = PostgresTaskStore(url)
    producer.migrate()
    ctx = mp.get_context("spawn")
    counters, stop_event = _Counters(ctx), ctx.Event()
    ids = [f"sim-{plan.mode}-{i}" for i in range(plan.workers)]
    groups = [ids[i::plan.processes] for i in range(plan.processes) if ids[i::plan.processes]]
    procs = [ctx.Process(target=_process_main, args=(url, plan, group, counters, stop_event)) for group in groups]
    for proc in procs:
        proc.start()
    figures: dict[str, float] = {}
    try:
        with psycopg.connect(admin_url, autocommit=True) as admin, psycopg.connect(url, autocommit=True) as conn:
            if not _wait(lambda: counters.ready.value >= plan.workers, 60 + plan.workers * 0.5):
                raise click.ClickException(f"only {counters.ready.value}/{plan.workers} workers came up")
            time.sleep(2.0)  # every first claim and registration done
            figures["connections_per_worker"] = _connections(admin, db) / plan.workers

            c0, t0, cpu0, server0 = _commits(admin, db), time.monotonic(), _cpu_ticks(), server_cpu_seconds()
            time.sleep(plan.idle_seconds)
            figures["idle_tx_per_s"] = (_commits(admin, db) - c0) / (time.monotonic() - t0)
            figures["idle_cpu_percent"] = _busy_percent(cpu0)
            figures["idle_server_cores"] = (server_cpu_seconds() - server0) / (time.monotonic() - t0)

            # burst: N rows in one INSERT (a producer's bulk insert) into N idle workers
            claims0, inserted_at = counters.claims.value, time.monotonic()
            conn.execute("INSERT INTO tasks (id, task_type, params, status, attempts, max_attempts, priority, "
                         "created_at, updated_at) SELECT gen_random_uuid()::text, 'sim', jsonb_build_object('n', g),"
                         " 'Queued', 0, 3, 0, clock_timestamp(), clock_timestamp() "
                         "FROM generate_series(1, %s) AS g", (plan.workers,))
            figures["burst_insert_ms"] = 1000 * (time.monotonic() - inserted_at)  # the dispatcher's wakes included
            _wait(lambda: conn.execute("SELECT count(*) FROM tasks WHERE status = 'Queued'").fetchone()[0] == 0, 60)
            burst = _pickups(conn, 0)
            figures["burst_claims_per_row"] = (counters.claims.value - claims0) / plan.workers
            figures["burst_pickup_p50_ms"] = 1000 * percentile(burst, 0.5)
            figures["burst_pickup_p99_ms"] = 1000 * percentile(burst, 0.99)
            _wait(lambda: conn.execute("SELECT count(*) FROM tasks WHERE status <> 'Complete'").fetchone()[0] == 0,
                  60)
            time.sleep(1.0)

            # steady arrivals (Poisson) at the planned utilisation
            rate = plan.utilisation * plan.workers / plan.mean_task_seconds
            claims0, beats0 = counters.claims.value, counters.heartbeats.value
            c0, t0, cpu0, server0 = _commits(admin, db), time.monotonic(), _cpu_ticks(), server_cpu_seconds()
            busy0 = counters.busy_ms.value
            first_n, n, rng = 1_000_000, 1_000_000, random.Random(7)
            connections, next_at = None, t0
            while (now := time.monotonic()) - t0 < plan.steady_seconds:
                # arrivals on a fixed schedule: a slow insert does not lower the rate
                next_at += rng.expovariate(rate)
                time.sleep(max(0.0, next_at - now))
                producer.add_task(NewTask("sim", {"n": n}))
                n += 1
                if connections is None and time.monotonic() - t0 >= plan.steady_seconds / 2:
                    connections = _connections(admin, db)
            elapsed = time.monotonic() - t0
            figures["load_cpu_percent"] = _busy_percent(cpu0)
            figures["load_server_cores"] = (server_cpu_seconds() - server0) / elapsed
            figures["steady_rows_per_s"] = (n - first_n) / elapsed
            figures["planned_rows_per_s"] = rate
            figures["load_tx_per_s"] = (_commits(admin, db) - c0) / elapsed
            figures["heartbeat_writes_per_s"] = (counters.heartbeats.value - beats0) / elapsed
            busy_minutes = (counters.busy_ms.value - busy0) / 60_000
            figures["heartbeat_writes_per_task_minute"] = (counters.heartbeats.value - beats0) / max(busy_minutes, 1e-9)
            _wait(lambda: conn.execute("SELECT count(*) FROM tasks WHERE status = 'Queued'").fetchone()[0] == 0, 60)
            steady = _pickups(conn, first_n)
            figures["steady_rows"] = n - first_n
            figures["steady_claims_per_row"] = (counters.claims.value - claims0) / max(1, n - first_n)
            figures["steady_pickup_p50_ms"] = 1000 * percentile(steady, 0.5)
            figures["steady_pickup_p99_ms"] = 1000 * percentile(steady, 0.99)
            figures["connections_per_worker_under_load"] = (connections or 0) / plan.workers
    finally:
        stop_event.set()
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
        producer.close()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    return figures


ROWS = [
    ("connections_per_worker", "server connections per worker (idle)", "{:.2f}"),
    ("connections_per_worker_under_load", "server connections per worker (load)", "{:.2f}"),
    ("burst_claims_per_row", "claim calls per row, burst of N rows", "{:.2f}"),
    ("burst_insert_ms", "burst INSERT of N rows, commit included (ms)", "{:.1f}"),
    ("burst_pickup_p50_ms", "burst pickup p50 (ms)", "{:.1f}"),
    ("burst_pickup_p99_ms", "burst pickup p99 (ms)", "{:.1f}"),
    ("steady_claims_per_row", "claim calls per row, steady arrivals", "{:.2f}"),
    ("steady_pickup_p50_ms", "steady pickup p50 (ms)", "{:.1f}"),
    ("steady_pickup_p99_ms", "steady pickup p99 (ms)", "{:.1f}"),
    ("idle_tx_per_s", "database transactions/s, idle", "{:.0f}"),
    ("load_tx_per_s", "database transactions/s, steady load", "{:.0f}"),
    ("heartbeat_writes_per_s", "heartbeat writes/s, steady load", "{:.1f}"),
    ("heartbeat_writes_per_task_minute", "heartbeat writes per running task-minute", "{:.1f}"),
    ("idle_cpu_percent", "box CPU busy %, idle (server + workers)", "{:.0f}"),
    ("load_cpu_percent", "box CPU busy %, steady load", "{:.0f}"),
    ("idle_server_cores", "Postgres CPU (cores), idle", "{:.2f}"),
    ("load_server_cores", "Postgres CPU (cores), steady load", "{:.2f}"),
    ("steady_rows_per_s", "rows inserted/s, steady (planned below)", "{:.1f}"),
    ("planned_rows_per_s", "rows/s planned (utilisation x capacity)", "{:.1f}"),
    ("steady_rows", "steady rows inserted", "{:.0f}"),
]


def report(n: int, results: dict[str, dict[str, float]]) -> None:
    modes = list(results)
    others = [m for m in modes if m != "doorbell"] if "doorbell" in results else []
    print(f"\n== N = {n} workers ==")
    print(f"{'':44}" + "".join(f"{m:>11}" for m in modes) + "".join(f"{m + '/doorbell':>17}" for m in others))
    for key, label, fmt in ROWS:
        line = f"{label:44}" + "".join(f"{fmt.format(results[m].get(key, float('nan'))):>11}" for m in modes)
        if key not in ("steady_rows", "planned_rows_per_s"):
            base = results["doorbell"].get(key, float("nan")) if others else float("nan")
            for m in others:
                line += f"{results[m].get(key, float('nan')) / base:>16.1f}x" if base else f"{'-':>17}"
        print(line)
    if "doorbell" in results:
        one = results["doorbell"]
        checks = [("claims per row <= 3", max(one["burst_claims_per_row"], one["steady_claims_per_row"]) <= 3),
                  ("connections per worker <= 2",
                   max(one["connections_per_worker"], one["connections_per_worker_under_load"]) <= 2)]
        if n >= 500:
            checks.append(("steady pickup p99 < 50 ms", one["steady_pickup_p99_ms"] < 50))
        print("targets (doorbell): " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks))


@click.command()
@click.option("--sizes", default="10,100,500", show_default=True, help="Fleet sizes N.")
@click.option("--modes", default="all,listen,doorbell", show_default=True,
              help="Designs: all (wake-all, before 011), listen (wake-one by LISTEN, 011), doorbell (wake-one by "
                   "the worker's doorbell, 027).")
@click.option("--processes", default=4, show_default=True, help="Processes the simulated workers are spread over.")
@click.option("--mean-task-seconds", default=1.0, show_default=True)
# Postgres backends flush their statistics up to 10 s late when idle: shorter windows read noise.
@click.option("--idle-seconds", default=20.0, show_default=True)
@click.option("--steady-seconds", default=20.0, show_default=True)
@click.option("--utilisation", default=0.3, show_default=True, help="Steady arrival rate as a share of capacity.")
@click.option("--admin-url", default=None, help="A running server to create the fleet's databases in (small "
              "fleets: its max_connections must fit 4 per worker) instead of a throwaway cluster.")
def main(sizes: str, modes: str, processes: int, mean_task_seconds: float, idle_seconds: float,
         steady_seconds: float, utilisation: float, admin_url: str | None) -> None:
    fleet_sizes = [int(s) for s in sizes.split(",") if s]
    chosen = [m for m in modes.split(",") if m]
    if not set(chosen) <= set(STORE_OPTIONS):
        raise click.BadParameter(f"modes are {', '.join(STORE_OPTIONS)}", param_hint="--modes")

    def run_all(url: str) -> None:
        for n in fleet_sizes:
            results = {}
            for mode in chosen:
                plan = Plan(mode, n, min(processes, n), mean_task_seconds, idle_seconds, steady_seconds, utilisation)
                results[mode] = run_plan(url, plan)
            report(n, results)
            sys.stdout.flush()

    if admin_url:
        run_all(admin_url)
    else:
        # a plain kill (SIGTERM) unwinds like Ctrl-C, so the throwaway cluster is stopped and its folder removed
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        root = Path(tempfile.mkdtemp(prefix="wangp-fleet-"))
        try:
            with throwaway_cluster(root, max_connections=4 * max(fleet_sizes) + 50) as cluster_url:
                run_all(cluster_url)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    print(f"(pickup = created_at → claimed_at on the server clock; mean task {mean_task_seconds:g} s, lease "
          f"{LEASE_SECONDS:g} s, poll interval {POLL_SECONDS:g} s)")


if __name__ == "__main__":
    main()
