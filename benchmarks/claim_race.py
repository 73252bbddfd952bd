"""Shared by the claim-throughput benchmarks: start N claiming processes together, collect the ids each
one claimed, and turn them into a rate, a double-claim count and the rows nobody claimed."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import Counter
from collections.abc import Callable, Iterable


def claim_tally(claimed: Iterable[str], rows: int, elapsed: float) -> tuple[float, int, int]:
    """(claims per second, double claims, rows never claimed)."""
    claimed = list(claimed)
    counts = Counter(claimed)
    doubles = sum(n - 1 for n in counts.values() if n > 1)
    return len(claimed) / elapsed, doubles, rows - len(counts)


def race_claimers(claimer: Callable[..., None], args_of: Callable[[int], tuple], processes: int, rows: int,
                  *, settle_seconds: float) -> tuple[float, int, int]:
    """Run ``claimer(*args_of(i), start, out)`` in ``processes`` processes; each waits on ``start`` (set once
    all have had ``settle_seconds`` to connect) and puts the list of ids it claimed on ``out``."""
    start, out = mp.Event(), mp.Queue()
    procs = [mp.Process(target=claimer, args=(*args_of(i), start, out)) for i in range(processes)]
    for proc in procs:
        proc.start()
    time.sleep(settle_seconds)
    began = time.perf_counter()
    start.set()
    claimed = [task_id for _ in procs for task_id in out.get()]
    elapsed = time.perf_counter() - began
    for proc in procs:
        proc.join()
    return claim_tally(claimed, rows, elapsed)
