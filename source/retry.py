"""Exponential backoff with jitter: the one schedule for waiting before another try, whether the try is an
upload a moment later or a whole task requeued for later (``run_after``), and the one loop that retries a
call on it (claims, result writes, Postgres and Supabase API statements, the LISTEN reconnect, uploads)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

T = TypeVar("T")

_default_log = structlog.get_logger(__name__)


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


def _always(_exc: BaseException) -> bool:
    return True


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed call is tried again: only failures ``retryable`` accepts (the rest propagate at once),
    after ``backoff``, while fewer than ``attempts`` tries were made (None: no limit) and the next try would
    start within ``deadline_seconds`` of the first (None: no limit)."""

    backoff: Backoff
    attempts: int | None = None
    deadline_seconds: float | None = None
    retryable: Callable[[BaseException], bool] = _always


def retry_call(call: Callable[[], T], policy: RetryPolicy, *, event: str, log: Any = None,
               gave_up_event: str | None = None, stop: threading.Event | None = None,
               give_up: Callable[[], str | None] | None = None,
               sleep: Callable[[float], None] = time.sleep, **context: Any) -> T:
    """``call()`` until it returns, retrying the failures ``policy`` calls retryable. Each retried failure is
    logged as ``event`` (warning: attempt, retry_in, error, ``context``); the last one, when the helper gives
    up, as ``gave_up_event`` (error, with the reason) and re-raised. It gives up when the policy's attempts or
    deadline are used, when ``stop`` is set (it also cuts the wait short) or when ``give_up()`` names a
    reason. A failure the policy does not call retryable is raised at once, unlogged (the caller's to tell)."""
    log = log if log is not None else _default_log
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except Exception as exc:
            if not policy.retryable(exc):
                raise
            last = exc
            delay = policy.backoff.delay(attempt)
            reason = _reason_to_stop(policy, attempt, started, delay, stop, give_up)
            error = _describe(exc)
            if reason is not None:
                log.error(gave_up_event or f"{event}_gave_up", attempt=attempt, error=error, reason=reason,
                          **context)
                raise
            log.warning(event, attempt=attempt, retry_in=round(delay, 3), error=error, **context)
        if stop is not None:
            if stop.wait(delay):
                log.error(gave_up_event or f"{event}_gave_up", attempt=attempt, error=error, reason="stopped",
                          **context)
                raise last
        else:
            sleep(delay)


def _reason_to_stop(policy: RetryPolicy, attempt: int, started: float, delay: float,
                    stop: threading.Event | None, give_up: Callable[[], str | None] | None) -> str | None:
    if policy.attempts is not None and attempt >= policy.attempts:
        return f"{attempt} attempts made"
    if policy.deadline_seconds is not None and time.monotonic() + delay - started > policy.deadline_seconds:
        return f"still failing after {policy.deadline_seconds:g} s"
    if stop is not None and stop.is_set():
        return "stopped"
    return give_up() if give_up is not None else None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__
