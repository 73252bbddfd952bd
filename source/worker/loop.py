"""The worker loop: claim → route → run → report, with leases, wake-up and graceful shutdown."""

from __future__ import annotations

import contextlib
import contextvars
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from source.db.models import Task, TaskStatus, WorkerInfo, may_link
from source.db.store import TaskStore
from source.db.transient import is_store_outage
from source.errors import (
    CancelReason,
    InvalidParams,
    RetryableError,
    TaskCancelled,
    TaskError,
    describe_storage_error,
)
from source.handlers.context import TaskContext, TaskOutcome
from source.logging_utils import redact, redact_value
from source.model_memory import ModelMemory
from source.retry import Backoff, RetryPolicy, retry_call
from source.routing import resolve_handler
from source.task_files.paths import remove_task_work_dir
from source.worker.gpu_info import detect_gpu
from source.worker.heartbeat import Heartbeat
from source.worker.limits import task_timeout
from source.worker.publishing import LocalPublisher, OutputPublisher, publish_thumbnail
from source.worker.settings import HOUSEKEEPING_TURN_SHARE, WorkerSettings
from source.worker.webhooks import (
    POST_TIMEOUT_SECONDS,
    TaskWebhooks,
    WebhookSender,
    split_webhook_params,
    webhook_request,
)

log = structlog.get_logger(__name__)

MAX_ERROR_CHARS = 4000
# After a stop request times out, how long a cancelled handler gets to reach its next checkpoint.
CHECKPOINT_GRACE_SECONDS = 10.0
EXIT_OK = 0
EXIT_FORCED = 130
# A handler ignored cancellation: exit so a supervisor restarts a clean process.
EXIT_HANDLER_STUCK = 3
# How often a worker looks for rows that can never run (cycles, unknown statuses): they are rare, and
# the look touches every blocked row.
UNRUNNABLE_SWEEP_SECONDS = 30.0
# The claim loop's store error that is not an outage, or a worker id that is another user's (docs/operations.md, "Exit codes").
EXIT_STORE_FAILED = 1
# reigh-worker's supervisor protocol (IDLE_RELEASE_EXIT_CODE): idle past --idle-release-minutes, the GPU given back.
EXIT_IDLE_RELEASE = 75
# What migration 026 answers a token worker registering under an id that is not its user's.
WORKER_ID_TAKEN = "is registered by another user or by a service worker"
# Backoff between claims while the database is away (up to the poll interval), and between attempts to
# write a task's outcome (up to 5 s, for as long as the lease lasts).
CLAIM_RETRY_FIRST_SECONDS = 0.1
REPORT_BACKOFF = Backoff(first=0.1, cap=5.0)

T = TypeVar("T")

# Which model the worker has resident, and the task types whose default model it is; used to prefer
# rows that need no model switch.
AffinityProvider = Callable[[], tuple[str | None, tuple[str, ...]]]
QueueStatsProvider = Callable[[], dict[str, Any] | None]


class WorkerObserver:
    """Hooks for metrics and health; the default does nothing."""

    def loop_tick(self) -> None:
        """Called at least every fraction of a second while the loop is alive (idle or supervising)."""

    def task_claimed(self, task: Task) -> None: ...

    def task_finished(self, task: Task, status: str, seconds: float | None) -> None: ...


def _no_affinity() -> tuple[str | None, tuple[str, ...]]:
    return None, ()


def _no_queue_stats() -> dict[str, Any] | None:
    return None


@dataclass
class _HandlerRun:
    """The handler running in its own thread, so the loop can keep watch (signals, timeouts)."""

    ctx: TaskContext
    outcome: TaskOutcome | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None
    started: float = field(default_factory=time.monotonic)

    def start(self) -> None:
        context = contextvars.copy_context()
        self.thread = threading.Thread(
            target=context.run, args=(self._run,), name=f"task-{self.ctx.task.id}", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        try:
            legacy_model = self.ctx.params.get("model") if self.ctx.settings.legacy_unknown_task_types else None
            handler = resolve_handler(self.ctx.task.task_type, legacy_unknown_model=legacy_model)
            self.outcome = handler(self.ctx)
            if not isinstance(self.outcome, TaskOutcome):
                raise TypeError(f"handler returned {type(self.outcome).__name__}, expected TaskOutcome")
        except BaseException as exc:  # reported by the loop, never lost
            self.error = exc

    def wait(self, seconds: float) -> bool:
        assert self.thread is not None
        self.thread.join(seconds)
        return not self.thread.is_alive()


class Worker:
    def __init__(
        self,
        store: TaskStore,
        settings: WorkerSettings,
        *,
        publisher: OutputPublisher | None = None,
        max_tasks: int | None = None,
        exit_when_idle: bool = False,
        affinity: AffinityProvider = _no_affinity,
        queue_stats: QueueStatsProvider = _no_queue_stats,
        observer: WorkerObserver | None = None,
        generation: Any = None,
        models: ModelMemory | None = None,
        webhooks: WebhookSender | None = None,
    ) -> None:
        self.store = store
        self.generation = generation  # handed to handlers through the task context
        # The auxiliary models kept beside the resident one (the generation engine's, in worker.py), handed to
        # handlers through the task context and reported in the worker's heartbeat (``tasks workers``).
        self.models = models if models is not None else ModelMemory()
        self.settings = settings
        self.publisher = publisher or LocalPublisher()
        self.webhooks = webhooks
        self._hooks: TaskWebhooks | None = None  # the running task's deliveries
        self.max_tasks = max_tasks
        self.exit_when_idle = exit_when_idle
        self.affinity = affinity
        self.queue_stats = queue_stats
        self.observer = observer or WorkerObserver()
        self.stop_requested = threading.Event()
        self.exit_code = EXIT_OK
        self.processed = 0
        self._next_housekeeping = 0.0
        self._next_unrunnable_sweep = 0.0
        # A starting worker does every housekeeping job once without waiting for the fleet's turn: what a
        # crash left behind is cleaned before its first claim (and a --once run does its own cleaning).
        self._starting = True
        self._started_at = time.monotonic()
        self._idle_since: float | None = None
        self.log = log.bind(worker_id=settings.worker_id)

    # -- lifecycle -----------------------------------------------------------------------------------
    def request_stop(self, reason: str = "requested") -> None:
        if not self.stop_requested.is_set():
            self.log.info("shutdown_requested", reason=reason, grace_seconds=self.settings.shutdown_grace)
        self.stop_requested.set()
        wake_waiters = getattr(self.store, "wake_waiters", None)  # Postgres: an idle wait returns now
        if wake_waiters is not None:
            wake_waiters()

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, _frame: Any) -> None:
            name = signal.Signals(signum).name
            if self.stop_requested.is_set():
                self.log.warning("forced_exit", signal=name)
                os._exit(EXIT_FORCED)
            self.request_stop(name)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def run(self) -> int:
        if not self._register():
            self.exit_code = EXIT_STORE_FAILED
            return self.exit_code
        self.log.info(
            "worker_started",
            pid=os.getpid(),
            output_dir=str(self.settings.main_output_dir),
            poll_interval=self.settings.poll_interval,
            lease_seconds=self.settings.lease_seconds,
            capabilities=self.settings.capabilities.as_json() if self.settings.capabilities.restricted else None,
        )
        while not self.stop_requested.is_set():
            try:
                task = self._next_task()
            except Exception as exc:  # the store answered with an error another try would repeat
                self.log.error("store_failed", error=f"{type(exc).__name__}: {exc}"[:1000],
                               hint="not an outage (a missing function, a revoked right?): exiting so the "
                                    "supervisor restarts a worker, whose start checks the schema")
                self.exit_code = EXIT_STORE_FAILED
                break
            if task is None:
                break
            self._process(task)
            self.processed += 1
            if self.exit_code == EXIT_HANDLER_STUCK:
                break
            if self.max_tasks is not None and self.processed >= self.max_tasks:
                break
        self._touch(None, status="stopped")
        if self.webhooks is not None:  # deliver what this worker owes (bounded by their retry window)
            bound = self.settings.shutdown_grace if self.stop_requested.is_set() else \
                self.webhooks.retry_seconds + POST_TIMEOUT_SECONDS
            if not self.webhooks.wait(bound):
                self.log.warning("webhooks_undelivered_at_exit", waited_seconds=bound)
        self.log.info("worker_stopped", processed=self.processed, exit_code=self.exit_code)
        return self.exit_code

    # -- registry ------------------------------------------------------------------------------------
    def _register(self) -> bool:
        """False only when the worker id is someone else's (a token worker under another user's or a service
        worker's id, migration 026): its idle registration would fail on every wait, so it must not run."""
        gpu_name, gpu_memory = detect_gpu()
        try:
            self.store.register_worker(WorkerInfo(id=self.settings.worker_id, host=socket.gethostname(),
                                                  pid=os.getpid(), gpu_name=gpu_name, gpu_memory_gb=gpu_memory,
                                                  capabilities=self.settings.capabilities))
        except Exception as exc:
            if WORKER_ID_TAKEN in str(exc):
                self.log.error("worker_id_taken", error=str(exc).splitlines()[0],
                               hint="start this worker with another --worker id")
                return False
            self.log.warning("worker_register_failed", error=str(exc))  # the registry is for operators
        return True

    def _touch(self, task: Task | None, status: str = "running") -> None:
        try:
            self.store.touch_worker(self.settings.worker_id, resident_model=self.affinity()[0],
                                    current_task_id=task.id if task else None, status=status,
                                    stats=self._stats())
        except Exception as exc:
            self.log.warning("worker_touch_failed", error=str(exc))

    def _stats(self) -> dict[str, Any] | None:
        stats, auxiliary = self.queue_stats(), self.models.auxiliary_names
        return {**(stats or {}), "auxiliary_models": auxiliary} if auxiliary else stats

    # -- claiming ------------------------------------------------------------------------------------
    def _next_task(self) -> Task | None:
        """The next claimed task; None when stopping, or idle with ``exit_when_idle``. A database outage is
        waited out (backing off up to the poll interval); any other store error goes up (see ``run``)."""
        claim = True
        policy = RetryPolicy(Backoff(first=CLAIM_RETRY_FIRST_SECONDS, cap=self.settings.poll_interval),
                             retryable=is_store_outage)
        while not self.stop_requested.is_set():
            self.observer.loop_tick()

            def claim_round(claim: bool = claim) -> Task | None:
                self.observer.loop_tick()
                self._housekeeping_if_due()
                return self._claim() if claim else None

            try:
                task = retry_call(claim_round, policy, event="claim_failed", log=self.log,
                                  stop=self.stop_requested)
            except Exception as exc:
                if is_store_outage(exc):  # given up only because a stop was requested
                    return None
                raise
            if task is not None:
                self._idle_since = None
                return task
            if self.exit_when_idle:
                return None
            if self._idle_release_due():
                self.exit_code = EXIT_IDLE_RELEASE
                return None
            claim = self._wait_for_work()
        return None

    def _idle_release_due(self) -> bool:
        """reigh-worker's idle release: no claim for ``idle_release_seconds`` (and past the start's grace)."""
        now = time.monotonic()
        self._idle_since = self._idle_since or now
        release = self.settings.idle_release_seconds
        due = (release > 0 and now - self._started_at >= self.settings.idle_release_grace_seconds
               and now - self._idle_since >= release)
        if due:
            self.log.info("worker_idle_release", idle_seconds=round(now - self._idle_since, 1),
                          exit_code=EXIT_IDLE_RELEASE)
        return due

    def _claim(self) -> Task | None:
        resident_model, resident_types = self.affinity()
        return self.store.claim_next_task(
            self.settings.worker_id,
            lease_seconds=self.settings.lease_seconds,
            resident_model=resident_model,
            resident_task_types=resident_types,
            affinity_window_seconds=self.settings.affinity_window,
            capabilities=self.settings.capabilities,
        )

    def _wait_for_work(self) -> bool:
        """Sleep until a change to the table makes a row claimable; the poll interval is only the
        fallback, and housekeeping (expired leases) still runs on time. False: nothing to claim yet (a
        wake-one store said so), do the housekeeping and wait again without a claim."""
        deadline = min(time.monotonic() + self.settings.poll_interval, self._next_housekeeping)
        wait_for_work = getattr(self.store, "wait_for_work", None)  # wake-one stores (Postgres, 011)
        while not self.stop_requested.is_set():
            self.observer.loop_tick()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return wait_for_work is None
            try:
                if wait_for_work is not None:
                    if wait_for_work(self.settings.worker_id, resident_model=self.affinity()[0],
                                     timeout=min(remaining, 1.0), poll_interval=self.settings.poll_interval,
                                     stop=self.stop_requested, capabilities=self.settings.capabilities):
                        return True
                elif self.store.wait_for_change(min(remaining, 1.0), stop=self.stop_requested) and (
                    self.store.has_claimable_task(self.settings.capabilities)
                ):
                    return True
            except Exception as exc:  # database away: the claim path backs off and reports it
                self.log.warning("wait_for_work_failed", error=str(exc))
                return True
        return True

    def _housekeeping_if_due(self) -> None:
        """Every housekeeping interval: this worker's own beat, then the fleet's jobs, each done only by
        the worker the store gives the turn to (about once per interval for the whole fleet, not once per
        idle worker)."""
        now = time.monotonic()
        if now < self._next_housekeeping:
            return
        self._next_housekeeping = now + self.settings.housekeeping_interval
        self._touch(None)
        try:
            failed: list[str] = []
            leases = self._my_turn("leases", self.settings.housekeeping_turn_seconds)
            if leases:
                for reclaim in self.store.reclaim_expired_leases():
                    self.log.warning("lease_reclaimed", task_id=reclaim.task_id,
                                     new_status=reclaim.new_status.value, attempts=reclaim.attempts)
                    if reclaim.new_status is TaskStatus.FAILED:
                        failed.append(reclaim.task_id)
            sweep = now >= self._next_unrunnable_sweep
            if sweep:
                self._next_unrunnable_sweep = now + UNRUNNABLE_SWEEP_SECONDS
                sweep = self._my_turn("unrunnable", HOUSEKEEPING_TURN_SHARE * UNRUNNABLE_SWEEP_SECONDS)
                for unrunnable in self.store.fail_unrunnable_tasks() if sweep else ():
                    self.log.warning("task_unrunnable", task_id=unrunnable.task_id, error=unrunnable.reason)
                    failed.append(unrunnable.task_id)
            self._errors_for_older_frontends(failed)
            if leases or sweep:  # rows behind what just failed fail with it, in the same round
                self._cascade_dependency_failures()
            self._starting = False
        except Exception as exc:
            if is_store_outage(exc):
                raise  # the claim loop waits it out (and this start's round is done again)
            self._starting = False  # a job failing every time must not make this worker skip the turns
            # a job that fails the same way each time must not stop the claims (another worker may take it)
            self.log.error("housekeeping_failed", error=f"{type(exc).__name__}: {exc}"[:1000])

    def _my_turn(self, job: str, turn_seconds: float) -> bool:
        taken = self.store.housekeeping_turn(job, interval_seconds=turn_seconds, worker_id=self.settings.worker_id)
        return taken or self._starting

    def _cascade_dependency_failures(self) -> None:
        failures = self.store.fail_orphaned_dependants()
        for failure in failures:
            self.log.warning("dependency_failed", task_id=failure.task_id, dependency_id=failure.dependency_id,
                             cascade=failure.kind.value)
        self._errors_for_older_frontends([failure.task_id for failure in failures])

    def _errors_for_older_frontends(self, failed_task_ids: list[str]) -> None:
        """--legacy-output-location: rows housekeeping failed carry their error in output_location too, as the
        rows this worker fails itself do (only the Failed ones change: a cascade may cancel instead)."""
        if self.settings.legacy_output_location and failed_task_ids:
            self.store.errors_to_output_location(failed_task_ids)

    # -- running one task ----------------------------------------------------------------------------
    def _process(self, task: Task) -> None:
        structlog.contextvars.bind_contextvars(
            task_id=task.id, task_type=task.task_type, worker_id=self.settings.worker_id
        )
        try:
            self._run_and_report(task)
        except Exception as exc:  # the store stayed away past its own retries: the lease keeps the row safe
            self.log.error("task_result_not_stored", task_id=task.id, error=str(exc)[:500],
                           hint="the row is reclaimed when its lease expires and runs again")
        finally:
            if not self.settings.keep_work_dirs:  # downloads, guide/mask videos: the row holds what matters
                remove_task_work_dir(self.settings.main_output_dir, task.id)
            structlog.contextvars.unbind_contextvars("task_id", "task_type", "worker_id")

    def _run_and_report(self, task: Task) -> None:
        tlog = self.log.bind(task_id=task.id, task_type=task.task_type)
        tlog.info("task_claimed", attempt=task.attempts, max_attempts=task.max_attempts, priority=task.priority)
        self.observer.task_claimed(task)
        try:
            params, webhook_keys = split_webhook_params(task.params())
            request = webhook_request(webhook_keys, default_url=self.webhooks.default_url if self.webhooks else None,
                                      policy=self.settings.input_policy,
                                      can_sign=self.webhooks is not None and self.webhooks.can_sign)
        except TaskError as exc:  # undecodable params, a webhook URL the policy refuses (no webhook to post to)
            self._fail(task, str(exc), tlog)
            return
        if (refused := self._foreign_parent(task)) is not None:
            self._fail(task, refused, tlog)
            return
        ctx = TaskContext(task=task, params=params, settings=self.settings, store=self.store, log=tlog,
                          generation=self.generation, models=self.models)
        if request is not None and self.webhooks is not None:
            self._hooks = self.webhooks.open(task, request, ctx.progress)
        try:
            try:
                timeout = task_timeout(task.task_type, params, self.settings.task_timeout)
            except InvalidParams as exc:
                self._fail(task, str(exc), tlog)
                return
            self._run_handler(task, ctx, timeout, tlog)
        finally:
            if self._hooks is not None:
                self._hooks.close()  # no terminal event if none was sent (requeued, parked, lease lost)
                self._hooks = None

    def _notify(self, event: str, status: str, **data: Any) -> None:
        """The running task's terminal webhook, once its row says so."""
        if self._hooks is not None:
            self._hooks.finish(event, status, **data)

    def _stored_error(self, task: Task, fallback: str) -> str:
        """The error the store wrote (it words a row whose retries ran out itself), for the webhook to say the same."""
        if self._hooks is None:
            return fallback
        try:
            stored = self.store.get_task(task.id)
        except Exception:  # the webhook still goes out, with the worker's own words
            return fallback
        return stored.error_message if stored is not None and stored.error_message else fallback

    def _run_handler(self, task: Task, ctx: TaskContext, timeout: float | None, tlog: Any) -> None:
        heartbeat = Heartbeat(
            self.store,
            task.id,
            self.settings.worker_id,
            lease_seconds=self.settings.lease_seconds,
            interval=self.settings.heartbeat_interval,
            cancel=ctx.cancel,
            progress=ctx.progress,
        )
        run = _HandlerRun(ctx)
        heartbeat.start()
        run.start()
        try:
            finished = self._supervise(run, timeout)
        finally:
            heartbeat.stop()
        elapsed = round(time.monotonic() - run.started, 3)
        if not finished:
            self._abandon(task, ctx, tlog)
        elif run.error is not None:
            self._report_error(task, run.error, elapsed, tlog)
        else:
            assert run.outcome is not None
            self._complete(task, run.outcome, elapsed, tlog)

    def _foreign_parent(self, task: Task) -> str | None:
        """Why a row's parent link is not honoured (its parent is not a row of its own project), or None. A
        row of another tenant naming one's orchestrator as its parent must neither finish nor fail it; the
        Postgres trigger refuses such a row at insert, and this covers every backend."""
        if not task.parent_task_id:
            return None
        parent = self.store.get_task(task.parent_task_id)
        if parent is not None and may_link(task, parent):
            return None
        return f"parent_task_id {task.parent_task_id} names no task of this row's project"

    def _supervise(self, run: _HandlerRun, timeout: float | None) -> bool:
        """Wait for the handler; on shutdown give it the grace period, on timeout stop it. Returns
        False when the handler ignored a stop request past the checkpoint grace."""
        cancel = run.ctx.cancel
        stop_seen_at: float | None = None
        cancelled_at: float | None = None
        self._touch(run.ctx.task)
        next_touch = time.monotonic() + self.settings.heartbeat_interval
        while not run.wait(0.05):
            self.observer.loop_tick()
            now = time.monotonic()
            if now >= next_touch:
                self._touch(run.ctx.task)
                next_touch = now + self.settings.heartbeat_interval
            if self.stop_requested.is_set() and stop_seen_at is None:
                stop_seen_at = now
            if stop_seen_at is not None and now - stop_seen_at >= self.settings.shutdown_grace:
                cancel.set(CancelReason.SHUTDOWN, "the worker is shutting down")
            if timeout and now - run.started >= timeout:
                cancel.set(CancelReason.TIMEOUT, f"the task timed out after {timeout:g} s")
            if cancel.is_set() and cancelled_at is None:
                cancelled_at = now
            if cancelled_at is not None and now - cancelled_at >= CHECKPOINT_GRACE_SECONDS:
                return False
        return True

    def _complete(self, task: Task, outcome: TaskOutcome, elapsed: float, tlog: Any) -> None:
        if outcome.awaiting_children:
            self._park(task, outcome, tlog)
            return
        if outcome.output_path and not isinstance(self.publisher, LocalPublisher):
            # One beat before a long upload: the row says so, and the lease covers it.
            self._report("heartbeat", lambda: self.store.heartbeat(
                task.id, self.settings.worker_id, lease_seconds=self.settings.lease_seconds, phase="uploading"), tlog)
        try:
            location = self.publisher.publish(task, outcome.output_path) if outcome.output_path else None
        except TaskError as exc:
            self._report_error(task, exc, elapsed, tlog)
            return
        outcome_result = publish_thumbnail(self.publisher, task, outcome.result)
        # Rows are read by people who must never see the worker's keys: scrub what gets stored.
        result = redact_value({**outcome_result, "worker_id": self.settings.worker_id, "attempt": task.attempts,
                               "handler_seconds": elapsed})
        if outcome_result.get("thumbnail") != outcome.result.get("thumbnail"):
            # The publisher's own URL is meant to be shared (a presigned URL's query is its point), not a leak.
            result["thumbnail"] = outcome_result["thumbnail"]
        parent_id = task.parent_task_id or outcome.parent_task_id
        if outcome.completes_parent and parent_id:
            # Parent first: if this process dies in between, the child is reclaimed, runs again and finds
            # the parent already Complete; the other order could leave the parent waiting forever.
            parent_result = redact_value({**outcome.result, "completed_by_task_id": task.id})
            if self._report("complete_parent", lambda: self.store.complete_parent(
                    parent_id, output_location=location, result=parent_result), tlog):
                tlog.info("parent_completed", parent_task_id=parent_id, output_location=location)
            else:
                tlog.warning("parent_completion_refused", parent_task_id=parent_id,
                             reason="the parent is no longer In Progress")
        if self._report("complete_task", lambda: self.store.complete_task(
                task.id, self.settings.worker_id, output_location=location, result=result), tlog):
            tlog.info("task_completed", output_location=location, seconds=elapsed)
            self._notify("completed", "Complete", output_location=location, result=result)
            self.observer.task_finished(task, "Complete", elapsed)
        else:
            tlog.warning("completion_refused", reason="the row was cancelled or reclaimed while running")

    def _park(self, task: Task, outcome: TaskOutcome, tlog: Any) -> None:
        result = redact_value({**outcome.result, "worker_id": self.settings.worker_id, "attempt": task.attempts})
        if self._report("park_awaiting_children", lambda: self.store.park_awaiting_children(
                task.id, self.settings.worker_id, result=result), tlog):
            tlog.info("task_awaiting_children", children=len(outcome.result.get("child_task_ids", [])))
        else:
            tlog.info("park_skipped", reason="the row already left In Progress (finished by its children?)")

    def _report_error(self, task: Task, error: BaseException, elapsed: float, tlog: Any) -> None:
        if isinstance(error, TaskCancelled):
            self._handle_cancelled(task, error, tlog)
            return
        if isinstance(error, RetryableError):
            self._retry_later(task, error, tlog)
            return
        if isinstance(error, TaskError):
            message = str(error)
            extra = None
        elif (storage_problem := describe_storage_error(error)) is not None:
            # Disk full, read-only or unwritable output dir: the operator's problem, not a code bug.
            message = storage_problem
            extra = None
        else:
            message = f"{type(error).__name__}: {error}"
            extra = {"traceback": "".join(traceback.format_exception(error))[-MAX_ERROR_CHARS:]}
            tlog.error("handler_crashed", error=message, exc_info=error)
        self._fail(task, message, tlog, seconds=elapsed, result=extra)

    def _retry_later(self, task: Task, error: RetryableError, tlog: Any) -> None:
        """A transient failure: the row waits out a backoff (run_after) and runs again, on any worker."""
        delay = round(self.settings.retry_backoff.delay(task.attempts), 3)
        status = self._report("retry_later", lambda: self.store.retry_later(
            task.id, self.settings.worker_id, error_message=str(error), delay_seconds=delay,
            error_in_output_location=self.settings.legacy_output_location), tlog)
        if status is TaskStatus.QUEUED:
            tlog.warning("task_retry_scheduled", error=str(error), attempt=task.attempts,
                         max_attempts=task.max_attempts, retry_in=delay)
        elif status is TaskStatus.FAILED:
            tlog.warning("task_failed", error=str(error), attempts=task.attempts, reason="retries used up")
            self._notify("failed", "Failed", error_message=self._stored_error(task, str(error)))
            self.observer.task_finished(task, "Failed", None)
            with contextlib.suppress(Exception):  # housekeeping does it again on its next round
                self._cascade_dependency_failures()

    def _handle_cancelled(self, task: Task, error: TaskCancelled, tlog: Any) -> None:
        if error.reason is CancelReason.CANCELLED:
            tlog.info("task_cancelled")
            self._notify("cancelled", "Cancelled")
            self.observer.task_finished(task, "Cancelled", None)
        elif error.reason is CancelReason.SHUTDOWN:
            requeued = self._requeue(task, tlog)
            tlog.info("task_requeued", requeued=requeued, reason="shutdown")
        elif error.reason is CancelReason.TIMEOUT:
            self._fail(task, error.detail or "the task timed out", tlog)
        else:
            tlog.warning("lease_lost", detail=error.detail)

    def _requeue(self, task: Task, tlog: Any) -> bool | None:
        return self._report("requeue_task", lambda: self.store.requeue_task(
            task.id, self.settings.worker_id, free_requeues=self.settings.free_shutdown_requeues), tlog)

    def _abandon(self, task: Task, ctx: TaskContext, tlog: Any) -> None:
        """The handler did not reach a checkpoint in time: record the outcome the stop asked for, then
        leave the loop (the stuck thread dies with the process)."""
        reason = ctx.cancel.reason
        tlog.error("handler_stuck", reason=reason)
        if reason is CancelReason.SHUTDOWN:
            self._requeue(task, tlog)
            tlog.info("task_requeued", reason="shutdown")
        elif reason is CancelReason.TIMEOUT:
            self._fail(task, ctx.cancel.detail, tlog)
            self.exit_code = EXIT_HANDLER_STUCK
        else:
            self.exit_code = EXIT_HANDLER_STUCK

    def _fail(self, task: Task, message: str, tlog: Any, *, seconds: float | None = None,
              result: dict[str, Any] | None = None) -> None:
        message = redact(message)[:MAX_ERROR_CHARS] or "the task failed without a message"
        result = redact_value(result)
        # --legacy-output-location: old frontends read the error text from output_location
        legacy = {"output_location": message} if self.settings.legacy_output_location else {}
        if self._report("fail_task", lambda: self.store.fail_task(
                task.id, self.settings.worker_id, error_message=message, result=result, **legacy), tlog):
            tlog.warning("task_failed", error=message, seconds=seconds)
            self._notify("failed", "Failed", error_message=message)
            self.observer.task_finished(task, "Failed", seconds)
            try:
                self._cascade_dependency_failures()
            except Exception as exc:  # housekeeping does it again on its next round
                tlog.warning("cascade_failed", error=str(exc))
        else:
            tlog.warning("failure_refused", error=message, reason="the row was cancelled or reclaimed")

    def _report(self, what: str, write: Callable[[], T], tlog: Any) -> T | None:
        """Write a task's outcome, retrying while the database is away or locked: a finished task must
        not be lost to an outage. Gives up (None) once the row's lease has run out (another worker may
        already run it again, and would refuse this late write) or a stop request's grace has run out;
        the row is then reclaimed when its lease expires. An error that is not an outage goes up."""
        stop_seen_at: float | None = None
        lease_ends = time.monotonic() + self.settings.lease_seconds

        def lease_or_grace_over() -> str | None:
            # Tried until the lease has run out (not only until the next try would start after it): the
            # row must be reclaimable by the time this worker goes on without it.
            nonlocal stop_seen_at
            if time.monotonic() >= lease_ends:
                return "the lease has run out; the row will be reclaimed and run again"
            if not self.stop_requested.is_set():
                return None
            stop_seen_at = stop_seen_at or time.monotonic()
            if time.monotonic() - stop_seen_at < self.settings.shutdown_grace:
                return None
            return "shutting down; the lease will expire and the row be reclaimed"

        policy = RetryPolicy(REPORT_BACKOFF, retryable=is_store_outage)
        try:
            return retry_call(write, policy, event="report_failed", gave_up_event="report_abandoned", log=tlog,
                              give_up=lease_or_grace_over, write=what)
        except Exception as exc:
            if is_store_outage(exc):
                return None
            raise
