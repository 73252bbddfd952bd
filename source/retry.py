"""Exponential backoff with jitter: the one schedule for waiting before another try, whether the try is an
upload a moment later or a whole task requeued for later (``run_after``)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Try ``n`` waits ``first * factor**(n-1)`` seconds, capped at ``cap``, scaled by a random factor in
    [1 - jitter, 1] so that workers that failed together do not come back together."""

    first: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        base = min(self.cap, self.first * self.factor ** max(0, attempt - 1))
        return base * (1.0 - self.jitter * (rng or random).random())


# A requeued task: 30 s, 60 s, 120 s, ... up to 30 minutes (a hub or bucket outage rarely ends sooner).
TASK_RETRY = Backoff(first=30.0, cap=1800.0)


def retry_call(call: Callable[[], T], *, attempts: int, backoff: Backoff,
               on_failure: Callable[[int, Exception], None] | None = None,
               sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()`` up to ``attempts`` times, waiting ``backoff`` between tries; the last failure is raised.
    ``on_failure(attempt, exc)`` is told about each failed try (to log it)."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if on_failure is not None:
                on_failure(attempt, exc)
            if attempt == attempts:
                raise
            sleep(backoff.delay(attempt))
    raise AssertionError("unreachable: attempts >= 1")
