"""``ping``: the diagnostic task operators use to smoke-test a deployment end to end.

Each execution appends one JSON line to ``<task_id>_ping.json`` in the output dir, so a count of
lines per task shows how often it really ran (exactly-once checks rely on it).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

from pydantic import Field

from source.handlers.context import TaskContext, TaskOutcome
from source.handlers.task_params import TaskParams, parse_params, takes

SLEEP_SLICE_SECONDS = 0.05


class PingParams(TaskParams):
    sleep_seconds: float = Field(default=0.0, ge=0.0, le=3600.0)
    message: str | None = Field(default=None, max_length=10_000)


@takes(PingParams)
def handle_ping(ctx: TaskContext) -> TaskOutcome:
    params = parse_params(PingParams, ctx.params)
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < params.sleep_seconds:
        ctx.check_cancelled()
        ctx.report_progress(elapsed / params.sleep_seconds)
        time.sleep(min(SLEEP_SLICE_SECONDS, params.sleep_seconds - elapsed))
    ctx.check_cancelled()

    record = {
        "task_id": ctx.task.id,
        "worker_id": ctx.settings.worker_id,
        "attempt": ctx.task.attempts,
        "pid": os.getpid(),
        "message": params.message,
        "at": datetime.now(timezone.utc).isoformat(),
    }
    path = ctx.output_path("ping.json")
    # One write() in append mode: concurrent writers never interleave inside a line.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)
    ctx.log.info("pong", slept=round(time.monotonic() - started, 3))
    return TaskOutcome(output_path=path, result={"pong": True, "message": params.message})
