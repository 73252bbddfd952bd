"""Webhooks: a row's ``webhook_url`` (or the worker's ``--webhook-url``) hears of its task's start, progress
and end, signed as Standard Webhooks specifies, delivered off the worker's loop and retried for a bounded time;
what each delivery came to goes into the finished row's ``result.webhooks``."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from source.db.models import Task
from source.db.store import TaskStore
from source.errors import InvalidParams, TaskError
from source.handlers.context import ProgressState
from source.logging_utils import redact_url
from source.retry import Backoff, RetryPolicy, retry_call
from source.task_files.policy import InputPolicy

log = structlog.get_logger(__name__)

WEBHOOK_EVENTS = ("start", "progress", "completed", "failed", "cancelled")
TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled"})
# The row keys the worker reads itself; handlers never see them.
WEBHOOK_KEYS = ("webhook_url", "webhook_events")
# What /openapi.json says of them in every task type's params.
WEBHOOK_PARAMS_SCHEMA: Mapping[str, Any] = MappingProxyType({
    "webhook_url": {"type": "string", "format": "uri",
                    "description": "POST this task's events here, signed as Standard Webhooks specifies (public "
                                   "addresses only unless the worker runs with --allow-private-urls)"},
    "webhook_events": {"anyOf": [{"type": "array", "items": {"type": "string", "enum": list(WEBHOOK_EVENTS)}},
                                 {"type": "string"}],
                       "description": f"which events to send [default: all of {', '.join(WEBHOOK_EVENTS)}]"},
})
SECRET_ENV = "WORKER_WEBHOOK_SECRET"
SECRET_PREFIX = "whsec_"
DEFAULT_RETRY_SECONDS = 60.0
DEFAULT_PROGRESS_SECONDS = 5.0
POST_TIMEOUT_SECONDS = 10.0
RETRY_BACKOFF = Backoff(first=0.5, cap=10.0, jitter=0.25)


# -- what a row asks for -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WebhookRequest:
    url: str
    events: frozenset[str]
    # What each connection may reach: the input policy for a row's own URL; the operator's --webhook-url is
    # trusted as the operator's setting (it may well be an address inside the studio's network).
    policy: InputPolicy


def split_webhook_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the params handlers get, the webhook keys the worker reads)."""
    return ({k: v for k, v in params.items() if k not in WEBHOOK_KEYS},
            {k: params[k] for k in WEBHOOK_KEYS if k in params})


def parse_webhook_events(value: Any) -> frozenset[str]:
    """``webhook_events``: a list or comma-separated text of WEBHOOK_EVENTS; None means all of them."""
    if value is None:
        return frozenset(WEBHOOK_EVENTS)
    items = [part.strip() for part in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise InvalidParams("params.webhook_events must be a list of event names or comma-separated text")
    unknown = sorted({i for i in items if i} - set(WEBHOOK_EVENTS))
    if unknown:
        raise InvalidParams(f"params.webhook_events: unknown event {unknown[0]!r}; events: {', '.join(WEBHOOK_EVENTS)}")
    events = frozenset(i for i in items if i)
    if not events:
        raise InvalidParams(f"params.webhook_events names no event; events: {', '.join(WEBHOOK_EVENTS)}")
    return events


def check_webhook_syntax(keys: Mapping[str, Any]) -> None:
    """What can be checked before a row exists (``tasks add``, ``POST /api/tasks``): the URL's form and the
    event names. The worker checks the address against its own policy when it claims the row."""
    url = keys.get("webhook_url")
    if url is not None and not _is_http_url(url):
        raise InvalidParams(f"params.webhook_url must be an http(s) URL, got {redact_url(str(url))[:200]!r}")
    parse_webhook_events(keys.get("webhook_events"))


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value.strip())
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def webhook_request(keys: Mapping[str, Any], *, default_url: str | None, policy: InputPolicy,
                    can_sign: bool) -> WebhookRequest | None:
    """The row's webhook (its own URL through the input policy, else the worker's default), or None."""
    check_webhook_syntax(keys)
    url = keys.get("webhook_url")
    events = parse_webhook_events(keys.get("webhook_events"))
    if url is not None:
        url = url.strip()
        policy.check_url(url, "webhook_url")
    elif default_url:
        url = default_url
        policy = dataclasses.replace(policy, allow_private_urls=True)
    elif "webhook_events" in keys:
        raise InvalidParams("params.webhook_events is given but there is no params.webhook_url and this worker "
                            "has no --webhook-url")
    else:
        return None
    if not can_sign:
        raise TaskError(f"params.webhook_url: this worker cannot sign webhooks ({SECRET_ENV} is not set)")
    return WebhookRequest(url=url, events=events, policy=policy)


# -- signing (Standard Webhooks: https://www.standardwebhooks.com) ----------------------------------------
class WebhookSigner:
    """``webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`` keyed by the secret's
    bytes (``whsec_`` + base64, as Standard Webhooks libraries generate and verify it)."""

    def __init__(self, secret: str) -> None:
        try:
            self._key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{SECRET_ENV} must be whsec_ followed by base64 (e.g. the output of "
                             "`python -c \"import base64,os;print('whsec_'+base64.b64encode(os.urandom(24)).decode())\"`)"
                             ) from None
        if len(self._key) < 16:
            raise ValueError(f"{SECRET_ENV} must hold at least 16 bytes of key")

    def sign(self, message_id: str, timestamp: int, body: bytes) -> str:
        signed = f"{message_id}.{timestamp}.".encode() + body
        return "v1," + base64.b64encode(hmac.new(self._key, signed, hashlib.sha256).digest()).decode()

    def headers(self, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
                "webhook-signature": self.sign(message_id, timestamp, body), "content-type": "application/json"}


# -- delivering --------------------------------------------------------------------------------------------
class DeliveryFailed(Exception):
    def __init__(self, message: str, *, status_code: int | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable


Post = Callable[[str, bytes, dict[str, str], InputPolicy], int]


def post_guarded(url: str, body: bytes, headers: dict[str, str], policy: InputPolicy) -> int:
    """POST through the input policy (every connection's address checked); no redirects followed."""
    from source.task_files.fetch import guarded_transport

    transport, _backend = guarded_transport(policy, "webhook_url")
    with httpx.Client(transport=transport, follow_redirects=False, timeout=POST_TIMEOUT_SECONDS) as client:
        return client.post(url, content=body, headers=headers).status_code


@dataclass(frozen=True)
class _Message:
    event: str
    data: dict[str, Any]


class WebhookSender:
    """Builds each task's deliveries (``open``); one thread per task delivers them in order, so a slow receiver
    delays only its own task's later events, never the generation or the loop."""

    def __init__(self, store: TaskStore, signer: WebhookSigner | None, *, worker_id: str,
                 default_url: str | None = None, retry_seconds: float = DEFAULT_RETRY_SECONDS,
                 progress_seconds: float = DEFAULT_PROGRESS_SECONDS, post: Post = post_guarded) -> None:
        self.store = store
        self.signer = signer
        self.worker_id = worker_id
        self.default_url = default_url
        self.retry_seconds = retry_seconds
        self.progress_seconds = progress_seconds
        self.post = post
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def can_sign(self) -> bool:
        return self.signer is not None

    def open(self, task: Task, request: WebhookRequest, progress: ProgressState) -> TaskWebhooks:
        hooks = TaskWebhooks(self, task, request, progress)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [hooks.thread]
        hooks.thread.start()
        return hooks

    def wait(self, timeout: float) -> bool:
        """Wait for every task's deliveries to end (a stopping worker delivers what it owes); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)


class TaskWebhooks:
    """One task attempt's deliveries: ``start`` at once, ``progress`` at most every ``progress_seconds`` while it
    changes, then the terminal event (``finish``); ``close`` ends it without one (requeued, lease lost)."""

    def __init__(self, sender: WebhookSender, task: Task, request: WebhookRequest, progress: ProgressState) -> None:
        self.sender, self.task, self.request, self.progress = sender, task, request, progress
        self.log = log.bind(task_id=task.id, webhook=redact_url(request.url))
        self._queue: queue.Queue[_Message | None] = queue.Queue()
        self.outcomes: list[dict[str, Any]] = []
        self._progress_sent: tuple[float | None, str | None] = (None, None)
        self._progress_counts = {"delivered_count": 0, "failed_count": 0}
        self.thread = threading.Thread(target=self._run, name=f"webhooks-{task.id}", daemon=True)
        self._queue.put(_Message("start", self._data("In Progress")))

    def finish(self, event: str, status: str, *, output_location: str | None = None,
               error_message: str | None = None, result: dict[str, Any] | None = None) -> None:
        assert event in TERMINAL_EVENTS
        self._queue.put(_Message(event, self._data(status, output_location=output_location,
                                                   error_message=error_message, result=result)))

    def close(self) -> None:
        self._queue.put(None)

    def _data(self, status: str, **extra: Any) -> dict[str, Any]:
        return {"task_id": self.task.id, "task_type": self.task.task_type, "project_id": self.task.project_id,
                "status": status, "attempt": self.task.attempts, **{k: v for k, v in extra.items() if v is not None}}

    def _run(self) -> None:
        try:
            while True:
                try:
                    message = self._queue.get(timeout=self.sender.progress_seconds)
                except queue.Empty:
                    self._maybe_progress()
                    continue
                if message is None:
                    return
                if message.event in TERMINAL_EVENTS:
                    self._maybe_progress()  # the last progress before the end, never after it
                    self._deliver(message)
                    self._record()
                    return
                self._deliver(message)
        except Exception as exc:  # a delivery bug must not surface in the worker
            self.log.error("webhook_sender_failed", error=f"{type(exc).__name__}: {exc}"[:500])

    def _maybe_progress(self) -> None:
        if "progress" not in self.request.events:
            return
        fraction, message = self.progress.latest()
        if fraction is None or (fraction, message) == self._progress_sent:
            return
        self._progress_sent = (fraction, message)
        data = self._data("In Progress", progress=round(fraction, 4), message=message)
        # Progress is not retried: the next one supersedes it.
        outcome = self._deliver(_Message("progress", data), retry=False)
        self._progress_counts["delivered_count" if outcome["delivered"] else "failed_count"] += 1

    def _deliver(self, message: _Message, *, retry: bool = True) -> dict[str, Any]:
        if message.event not in self.request.events:
            return {"delivered": False}
        signer = self.sender.signer
        assert signer is not None
        message_id = f"msg_{uuid.uuid4().hex}"  # the same for every retry of this message: receivers dedupe on it
        body = json.dumps({"type": f"task.{message.event}", "timestamp": datetime.now(timezone.utc).isoformat(),
                           "data": message.data}, default=str, separators=(",", ":")).encode()
        attempts = 0
        last_status: int | None = None

        def attempt() -> int:
            nonlocal attempts, last_status
            attempts += 1
            headers = signer.headers(message_id, int(time.time()), body)  # a fresh timestamp for each try
            try:
                status = self.sender.post(self.request.url, body, headers, self.request.policy)
            except InvalidParams as exc:  # the address the host resolved to is not allowed
                raise DeliveryFailed(str(exc), retryable=False) from None
            except httpx.HTTPError as exc:
                raise DeliveryFailed(f"{type(exc).__name__}: {exc}"[:300]) from None
            last_status = status
            if not 200 <= status < 300:
                raise DeliveryFailed(f"HTTP {status}", status_code=status,
                                     retryable=status >= 500 or status in (408, 429))
            return status

        policy = RetryPolicy(RETRY_BACKOFF, attempts=None if retry else 1, deadline_seconds=self.sender.retry_seconds,
                             retryable=lambda exc: isinstance(exc, DeliveryFailed) and exc.retryable)
        outcome: dict[str, Any] = {"event": message.event, "webhook_id": message_id}
        try:
            retry_call(attempt, policy, event="webhook_delivery_failed", log=self.log, webhook_event=message.event)
            outcome.update(delivered=True, attempts=attempts, status_code=last_status)
            self.log.info("webhook_delivered", webhook_event=message.event, attempts=attempts)
        except DeliveryFailed as exc:
            outcome.update(delivered=False, attempts=attempts, status_code=last_status, error=str(exc)[:300])
            self.log.warning("webhook_undelivered", webhook_event=message.event, attempts=attempts, error=str(exc))
        outcome["at"] = datetime.now(timezone.utc).isoformat()
        if message.event != "progress":
            self.outcomes.append(outcome)
        return outcome

    def _record(self) -> None:
        outcomes = list(self.outcomes)
        if "progress" in self.request.events:
            outcomes.append({"event": "progress", **self._progress_counts})
        if not outcomes:  # the filter sent nothing of this ending (e.g. only "failed", and it completed)
            return
        try:
            if not self.sender.store.record_webhook_deliveries(self.task.id, self.sender.worker_id, outcomes):
                self.log.info("webhook_outcomes_not_recorded", outcomes=outcomes,
                              reason="the row was run again elsewhere, or this store keeps no result of ours")
        except Exception as exc:  # the deliveries happened; only their record is lost
            self.log.warning("webhook_outcomes_not_recorded", error=str(exc)[:300])
