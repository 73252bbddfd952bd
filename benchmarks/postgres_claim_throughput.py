"""Claims per second on one Postgres table (10k queued rows) with 1, 4 and 8 claiming processes, and the
double-claim count (must be 0).

Each process claims through PostgresTaskStore (the worker's own verb: claim_next_task, FOR UPDATE SKIP
LOCKED) until the queue is empty, recording the ids it got; any id claimed twice is a double claim.
Two modes: claim only, and claim + complete (the complete waits for its WAL flush; the claim does not).
Two table shapes in the same run (--shapes): ours, and the older web app's uuid/enum table adopted in place
(its functions cast ids and statuses at the edges), so any cost of the casts shows as a ratio.
When pgbench is installed, the same claims are also driven by pgbench clients (C, no Python in the loop),
which shows what the SQL function itself sustains on this server.

    python benchmarks/postgres_claim_throughput.py [--rows 10000] [--shapes ours,adopted] [--url postgresql://...]
"""

from __future__ import annotations

import glob
import multiprocessing as mp
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.claim_race import race_claimers  # noqa: E402
from benchmarks.pg_schema import DEFAULT_URL, SHAPES, fresh_schema, insert_pings  # noqa: E402
from source.db.postgres import PostgresTaskStore  # noqa: E402


def _claimer(url: str, name: str, complete: bool, start: mp.Event, out: mp.Queue) -> None:
    store = PostgresTaskStore(url, max_connections=1)
    store.has_claimable_task()  # connected before the clock starts
    start.wait()
    claimed = []
    while (task := store.claim_next_task(name, lease_seconds=600)) is not None:
        if complete:
            store.complete_task(task.id, name, output_location=None, result=None)
        claimed.append(task.id)
    out.put(claimed)
    store.close()


def _run(admin_url: str, rows: int, processes: int, complete: bool, shape: str) -> tuple[float, int, int]:
    with fresh_schema(admin_url, shape) as url:
        insert_pings(url, rows)
        return race_claimers(_claimer, lambda i: (url, f"p{i}", complete), processes, rows, settle_seconds=1.0)


def _pgbench_rate(admin_url: str, rows: int, clients: int) -> tuple[float, int, int] | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench")) or [shutil.which("pgbench")]
    if not found[-1]:
        return None
    with fresh_schema(admin_url) as url, tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        insert_pings(url, rows)
        script.write("SELECT id FROM claim_next_task('pgbench-' || :client_id, 600);\n")
        script.flush()
        result = subprocess.run([found[-1], "-n", "-f", script.name, "-c", str(clients), "-j", str(min(clients, 4)),
                                 "-t", str(rows // clients), "-M", "prepared", url],
                                capture_output=True, text=True, check=True)
        rate = float(re.search(r"tps = ([0-9.]+)", result.stdout).group(1))
        with psycopg.connect(url) as conn:
            claimed, distinct = conn.execute("SELECT sum(attempts), count(*) FROM tasks WHERE status = 'In Progress'"
                                             ).fetchone()
    return rate, int(claimed) - int(distinct), rows - int(distinct)


@click.command()
@click.option("--rows", default=10_000, show_default=True)
@click.option("--shapes", default=",".join(SHAPES), show_default=True,
              help="Table shapes to measure side by side: ours, adopted (the web app's uuid/enum table).")
@click.option("--url", default=DEFAULT_URL, show_default=True, help="Admin URL; a fresh schema is made per run.")
def main(rows: int, shapes: str, url: str) -> None:
    chosen = [shape for shape in shapes.split(",") if shape]
    if not set(chosen) <= set(SHAPES):
        raise click.BadParameter(f"shapes are {', '.join(SHAPES)}", param_hint="--shapes")
    for complete in (False, True):
        label = "claim + complete" if complete else "claim only"
        rates: dict[tuple[str, int], float] = {}
        for processes in (1, 4, 8):
            for shape in chosen:  # interleaved, so drift on a shared machine hits both shapes alike
                rate, doubles, missing = _run(url, rows, processes, complete, shape)
                rates[shape, processes] = rate
                print(f"{label:<16} {shape:<7} {processes} process(es): {rate:,.0f} rows/s, "
                      f"double claims={doubles}, rows never claimed={missing}")
        for shape in chosen:
            print(f"{label:<16} {shape:<7} ratio 8 / 1 process: {rates[shape, 8] / rates[shape, 1]:.2f}x; "
                  f"target >= 1,000/s at 8: {'met' if rates[shape, 8] >= 1000 else 'NOT met'}")
        if set(SHAPES) <= set(chosen):
            print(f"{label:<16} adopted / ours: " + ", ".join(
                f"{p} proc {rates['adopted', p] / rates['ours', p]:.2f}x" for p in (1, 4, 8)))
    pgbench = {clients: _pgbench_rate(url, rows, clients) for clients in (1, 8)}
    if pgbench[1] and pgbench[8]:
        for clients, (rate, doubles, missing) in pgbench.items():
            print(f"pgbench claims   {clients} client(s): {rate:,.0f} claims/s, double claims={doubles}, "
                  f"rows never claimed={missing}")
        print(f"pgbench claims   ratio 8 / 1 client: {pgbench[8][0] / pgbench[1][0]:.2f}x")


if __name__ == "__main__":
    main()
