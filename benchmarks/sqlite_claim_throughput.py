"""Claims per second on one SQLite file with 1 and 4 claiming processes, and the double-claim count.

Each process claims and completes rows through SqliteTaskStore (the worker's own verbs) until the
queue is empty, recording the ids it got; any id claimed twice is a double claim.

    python benchmarks/sqlite_claim_throughput.py [--rows 2000]
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import tempfile
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.claim_race import race_claimers  # noqa: E402
from source.db.models import NewTask  # noqa: E402
from source.db.sqlite import SqliteTaskStore  # noqa: E402


def _claimer(db: str, name: str, start: mp.Event, out: mp.Queue) -> None:
    store = SqliteTaskStore(db)
    start.wait()
    claimed = []
    while (task := store.claim_next_task(name, lease_seconds=60)) is not None:
        store.complete_task(task.id, name, output_location=None, result=None)
        claimed.append(task.id)
    out.put(claimed)


def _run(rows: int, processes: int) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "tasks.db")
        store = SqliteTaskStore(db)
        store.migrate()
        for i in range(rows):
            store.add_task(NewTask("ping", {"i": i}))
        return race_claimers(_claimer, lambda i: (db, f"p{i}"), processes, rows, settle_seconds=0.5)


@click.command()
@click.option("--rows", default=2000, show_default=True)
def main(rows: int) -> None:
    results = {}
    for processes in (1, 4):
        rate, doubles, missing = _run(rows, processes)
        results[processes] = rate
        print(f"{processes} process(es): {rate:,.0f} claims/s (claim + complete), double claims={doubles}, "
              f"rows never claimed={missing}")
    print(f"ratio 4 processes / 1 process: {results[4] / results[1]:.2f}x (one writer at a time: SQLite's lock)")


if __name__ == "__main__":
    main()
