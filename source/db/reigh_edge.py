"""The task store as Reigh's edge functions (``<supabase url>/functions/v1/...``), called the way reigh-worker
calls them: no SQL, no schema of ours, nothing changed in Reigh's database except through those functions.
docs/reigh.md ("Edge-function mode") says what leases, heartbeats, progress and cancel become here."""

from __future__ import annotations

import base64
import mimetypes
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog

from source.db.config import StoreUnavailable
from source.db.models import (
    UNRESTRICTED,
    Capabilities,
    CascadeFailure,
    LeaseReclaim,
    NewTask,
    PurgedTask,
    QueuedKind,
    QueueStats,
    Task,
    TaskStatus,
    UnrunnableTask,
    WorkerInfo,
    WorkerRecord,
    child_task_id,
)
from source.errors import TaskError
from source.retry import Backoff, RetryPolicy, retry_call

log = structlog.get_logger(__name__)

# reigh-worker's default project (source/runtime/worker/server.py, --supabase-url).
REIGH_SUPABASE_URL = "https://wczysqzxlwdndgxitrvc.supabase.co"
# The functions this store calls, and the environment variable reigh-worker reads to override each one's URL
# (None: always <supabase url>/functions/v1/<name>). Reigh deploys completion as ``complete_task``.
EDGE_URL_ENV: dict[str, str | None] = {
    "claim-next-task": "SUPABASE_EDGE_CLAIM_TASK_URL",
    "complete_task": "SUPABASE_EDGE_COMPLETE_TASK_URL",
    "update-task-status": "SUPABASE_EDGE_UPDATE_TASK_URL",
    "create-task": "SUPABASE_EDGE_CREATE_TASK_URL",
    "task-counts": "SUPABASE_EDGE_TASK_COUNTS_URL",
    "get-orchestrator-children": "SUPABASE_EDGE_GET_ORCHESTRATOR_CHILDREN_URL",
    "get-task-status": "SUPABASE_EDGE_GET_TASK_STATUS_URL",
    "get-task-output": "SUPABASE_EDGE_GET_TASK_OUTPUT_URL",
    "get-predecessor-output": None,
    "generate-upload-url": None,
    "update-worker-model": None,
}
# reigh-worker: files under 2 MB travel base64 inside complete_task (its MODE 1), larger ones go to a signed
# upload URL from generate-upload-url first (MODE 3).
BASE64_UPLOAD_LIMIT_BYTES = 2 * 2**20
# Answers worth another try (reigh-worker's RETRYABLE_STATUS_CODES: 500 included for cold starts), 3 tries.
RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
CALL_ATTEMPTS = 3
CALL_BACKOFF = Backoff(first=1.0, cap=5.0)
# reigh-worker's guardian beats every 20 s (func_worker_heartbeat_with_logs).
WORKER_BEAT_SECONDS = 20.0
# The phases after a model is loaded (models.PHASES): the first one seen starts Reigh's billing clock again.
GENERATING_PHASES = ("denoising", "decoding", "encoding")
# Where a child's key travels in Reigh's params (Reigh has no child_key column); read back into Task.child_key.
CHILD_KEY_PARAM = "child_key"


class NotAvailableOverEdge(PermissionError):
    """An operator verb (listing every task, cancelling, stats) that Reigh's edge functions do not offer."""


class EdgeRefused(PermissionError):
    """An edge function refused this worker's key, or this row to it (401/403): not an outage, another try would
    get the same answer."""


def edge_urls(supabase_url: str, env: Mapping[str, str]) -> dict[str, str]:
    base = supabase_url.rstrip("/")
    return {name: (env.get(var) if var else None) or f"{base}/functions/v1/{name}"
            for name, var in EDGE_URL_ENV.items()}


@dataclass
class _Held:
    """A claimed row while this worker runs it: what the later calls about it need."""

    task: Task
    dependant_on: tuple[str, ...] = ()
    billing_reset: bool = False


@dataclass
class ReighEdgeStore:
    """``token``: a Reigh personal access token (that user's projects only) or the project's service-role key
    (every user Reigh serves from the cloud), sent as reigh-worker sends it, ``Authorization: Bearer``.
    ``service_key``: SUPABASE_SERVICE_ROLE_KEY when set, used where Reigh accepts only the service role
    (update-worker-model, the worker heartbeat), as reigh-worker does."""

    supabase_url: str
    token: str
    service_key: str | None = None
    urls: dict[str, str] = field(default_factory=dict)
    max_task_wait_minutes: int = 5
    runnable_task_types: frozenset[str] | None = None
    keep_local: bool = False
    base64_limit_bytes: int = BASE64_UPLOAD_LIMIT_BYTES
    timeout_seconds: float = 30.0
    client: httpx.Client | None = None

    def __post_init__(self) -> None:
        self.urls = {**edge_urls(self.supabase_url, {}), **self.urls}
        self.client = self.client or httpx.Client(timeout=self.timeout_seconds)
        self._held: dict[str, _Held] = {}
        self._projects: dict[str, str | None] = {}  # children made or verified here → their project
        self._lock = threading.Lock()
        self._worker_model: str | None = None
        self._next_worker_beat = 0.0
        self._service_calls_refused = False
        self._attempts: dict[str, int] = {}  # requeues of a row by this process (Reigh keeps no lease count)

    def __repr__(self) -> str:  # keys never end up in logs or tracebacks
        return f"ReighEdgeStore(supabase_url={self.supabase_url!r})"

    # -- calling the functions -----------------------------------------------------------------------
    def _post(self, function: str, payload: dict[str, Any], *, key: str | None = None,
              retry_404: bool = False, timeout: float | None = None) -> httpx.Response:
        """POST as reigh-worker does; 5xx, timeouts and the network are retried (3 tries), then raise
        StoreUnavailable (an outage: the loop waits it out); 401/403 raise EdgeRefused."""
        url = self.urls[function]
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key or self.token}"}

        def call() -> httpx.Response:
            response = self.client.post(url, json=payload, headers=headers,  # type: ignore[union-attr]
                                        timeout=timeout or self.timeout_seconds)
            if response.status_code in RETRYABLE_STATUS or (
                    retry_404 and response.status_code == 404 and "not found" in response.text.lower()):
                raise _Retry(response)
            return response

        policy = RetryPolicy(CALL_BACKOFF, attempts=CALL_ATTEMPTS,
                             retryable=lambda exc: isinstance(exc, _Retry | httpx.TransportError))
        try:
            response = retry_call(call, policy, event="reigh_edge_unavailable", log=log, function=function)
        except _Retry as exc:
            if exc.response.status_code == 404:
                return exc.response
            raise StoreUnavailable(f"Reigh's {function} at {url} answered {exc.response.status_code}: "
                                   f"{exc.response.text[:300]}") from None
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"Reigh's {function} at {url} unreachable: {type(exc).__name__}: {exc}") from exc
        if response.status_code in (401, 403):
            raise EdgeRefused(f"Reigh's {function} refused the key, or this row to it ({response.status_code}: "
                              f"{response.text[:200]}); check --reigh-access-token (a token from reigh.art, or the "
                              "service-role key)")
        return response

    # -- schema --------------------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Nothing: Reigh's database is Reigh's (reigh-worker's --migrate-only also exits doing nothing)."""
        return []

    def check_schema(self) -> None:
        """Nothing to migrate; the key is checked once, with the call reigh-worker makes before a claim."""
        try:
            response = self._post("task-counts", {"run_type": "gpu", "include_active": True})
        except EdgeRefused as exc:
            raise StoreUnavailable(str(exc)) from None
        if response.status_code != 200:
            raise StoreUnavailable(f"Reigh's task-counts answered {response.status_code}: {response.text[:300]}")

    # -- claiming ------------------------------------------------------------------------------------
    def claim_next_task(self, worker_id: str, *, lease_seconds: float, resident_model: str | None = None,
                        resident_task_types: tuple[str, ...] = (), affinity_window_seconds: float = 120.0,
                        capabilities: Capabilities = UNRESTRICTED) -> Task | None:
        """claim-next-task as reigh-worker calls it (run_type gpu, same_model_only, MAX_TASK_WAIT_MINUTES).
        Reigh chooses the row (credits, cloud switch, 5 running per user, all dependencies Complete, model
        affinity through workers.current_model); ``lease_seconds`` and the affinity window have no
        counterpart there. A row this worker cannot run goes straight back (Queued, worker cleared)."""
        self._beat_worker(worker_id, resident_model)
        response = self._post("claim-next-task", {
            "worker_id": worker_id, "run_type": "gpu", "same_model_only": True,
            "max_task_wait_minutes": self.max_task_wait_minutes})
        if response.status_code == 204:
            return None
        if response.status_code != 200:
            raise StoreUnavailable(f"Reigh's claim-next-task answered {response.status_code}: {response.text[:300]}")
        claimed = response.json()
        task_id = str(claimed["task_id"])
        output = self._task_output(task_id)
        params = claimed.get("params")
        task = self._to_task({"id": task_id, "task_type": claimed.get("task_type"), "params": params,
                              "status": TaskStatus.IN_PROGRESS.value, "project_id": claimed.get("project_id"),
                              "worker_id": worker_id}, (output or {}).get("dependant_on"))
        model = params.get("model") if isinstance(params, dict) else None
        if not self._runnable(task.task_type, model if isinstance(model, str) else None, capabilities):
            # Reigh's PAT path claims every run type ("PAT users run on their own hardware"): give the row
            # back untouched rather than fail a row some other worker of Reigh's runs.
            self._update_status(task_id, TaskStatus.QUEUED, clear_worker=True)
            log.warning("task_handed_back", task_id=task_id, task_type=task.task_type,
                        reason="this worker does not run that task type or model")
            return None
        return task

    def _runnable(self, task_type: str, model: str | None, capabilities: Capabilities) -> bool:
        if self.runnable_task_types is not None and task_type not in self.runnable_task_types:
            return False
        return not capabilities.restricted or capabilities.accepts(task_type, model)

    def has_claimable_task(self, capabilities: Capabilities = UNRESTRICTED) -> bool:
        response = self._post("task-counts", {"run_type": "gpu", "include_active": False})
        totals = response.json().get("totals", {}) if response.status_code == 200 else {}
        return int(totals.get("queued_only", 0) or 0) > 0 or int(totals.get("eligible_queued", 0) or 0) > 0

    def wait_for_change(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """No change feed over edge functions: the worker claims once per poll interval, as reigh-worker."""
        if stop is not None:
            stop.wait(timeout)
        else:
            time.sleep(timeout)
        return False

    # -- the running row -----------------------------------------------------------------------------
    def heartbeat(self, task_id: str, worker_id: str, *, lease_seconds: float, progress: float | None = None,
                  phase: str | None = None) -> bool:
        """Reigh has no lease and no progress column: a beat asks get-task-status whether the row is still
        In Progress (a cancel in Reigh's web app stops the generation here), and the worker itself beats. The
        first beat past loading resets generation_started_at, as reigh-worker does after its model switch."""
        self._beat_worker(worker_id, self._worker_model)
        state = self.task_status(task_id)
        running = state is not None and state[0] is TaskStatus.IN_PROGRESS
        held = self._held.get(task_id)
        if running and held is not None and phase in GENERATING_PHASES and not held.billing_reset:
            # reigh-worker resets generation_started_at once the model is loaded: a user is not billed for
            # the load (update-task-status's timestamp-only update)
            held.billing_reset = True
            self._post("update-task-status", {"task_id": task_id, "status": TaskStatus.IN_PROGRESS.value,
                                              "reset_generation_started_at": True})
        return running

    def task_status(self, task_id: str) -> tuple[TaskStatus, str | None] | None:
        response = self._post("get-task-status", {"task_id": task_id}, timeout=15)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise StoreUnavailable(f"Reigh's get-task-status answered {response.status_code}: {response.text[:200]}")
        status = TaskStatus(response.json()["status"])
        held = self._held.get(task_id)
        # Reigh's PAT claim writes no worker_id: a row this process claimed and that is still running is ours.
        return status, held.task.worker_id if held and status is TaskStatus.IN_PROGRESS else None

    def complete_task(self, task_id: str, worker_id: str, *, output_location: str | None,
                      result: dict[str, Any] | None) -> bool:
        """complete_task with the file itself (base64 under 2 MB, else a signed upload first), as reigh-worker
        does: Reigh stores it, makes the generation row and bills (a task without a file: update-task-status). False when the row is no longer In
        Progress (Reigh's own update would silently match nothing after storing the file)."""
        state = self.task_status(task_id)
        if state is None or state[0] is not TaskStatus.IN_PROGRESS:
            self._forget(task_id)
            return False
        local = Path(output_location) if output_location else None
        if local is None or not local.is_file():
            # No file to store (a task without an output): reigh-worker marks it through update-task-status.
            ok = self._update_status(task_id, TaskStatus.COMPLETE, output_location=output_location)
            self._forget(task_id)
            return ok
        thumbnail = (result or {}).get("thumbnail")
        thumb = Path(thumbnail) if isinstance(thumbnail, str) and Path(thumbnail).is_file() else None
        try:
            payload = self._completion_payload(task_id, local, thumb)
        except TaskError as exc:  # storage refused the signed upload: reigh-worker fails the row ("Upload failed")
            self._update_status(task_id, TaskStatus.FAILED, error_details=f"Upload failed: {exc}")
            self._forget(task_id)
            return False
        response = self._post("complete_task", payload, retry_404=True, timeout=60)
        if response.status_code != 200:
            error = f"Completion failed: complete_task answered {response.status_code}: {response.text[:300]}"
            log.error("reigh_completion_failed", task_id=task_id, error=error)
            self._update_status(task_id, TaskStatus.FAILED, error_details=error)  # reigh-worker does the same
            self._forget(task_id)
            return False
        answer = response.json()
        log.info("reigh_task_completed", task_id=task_id, public_url=answer.get("public_url"),
                 thumbnail_url=answer.get("thumbnail_url"), follow_up=answer.get("follow_up"))
        if not self.keep_local:
            for path in (local, thumb):
                if path is not None:
                    path.unlink(missing_ok=True)
        self._forget(task_id)
        return True

    def _completion_payload(self, task_id: str, local: Path, thumb: Path | None) -> dict[str, Any]:
        if local.stat().st_size < self.base64_limit_bytes:
            payload: dict[str, Any] = {"task_id": task_id, "filename": local.name,
                                       "file_data": base64.b64encode(local.read_bytes()).decode()}
            if thumb is not None:
                payload["first_frame_data"] = base64.b64encode(thumb.read_bytes()).decode()
                payload["first_frame_filename"] = f"thumb_{task_id[:8]}.jpg"
            return payload
        content_type = mimetypes.guess_type(local.name)[0] or "application/octet-stream"
        response = self._post("generate-upload-url", {"task_id": task_id, "filename": local.name,
                                                       "content_type": content_type,
                                                       "generate_thumbnail_url": thumb is not None})
        if response.status_code != 200:
            raise StoreUnavailable(f"Reigh's generate-upload-url answered {response.status_code}: "
                                   f"{response.text[:300]}")
        urls = response.json()
        self._put(urls["upload_url"], local, content_type)
        payload = {"task_id": task_id, "storage_path": urls["storage_path"]}
        if thumb is not None and urls.get("thumbnail_upload_url"):
            self._put(urls["thumbnail_upload_url"], thumb, "image/jpeg")
            payload["thumbnail_storage_path"] = urls["thumbnail_storage_path"]
        return payload

    def _put(self, url: str, path: Path, content_type: str) -> None:
        def put() -> None:
            response = self.client.put(url, content=path.read_bytes(),  # type: ignore[union-attr]
                                       headers={"Content-Type": content_type}, timeout=600)
            if response.status_code in RETRYABLE_STATUS:
                raise _Retry(response)
            if response.status_code not in (200, 201):
                raise TaskError(f"the signed upload of {path.name} was refused: {response.status_code} "
                                f"{response.text[:200]}")

        policy = RetryPolicy(CALL_BACKOFF, attempts=CALL_ATTEMPTS,
                             retryable=lambda exc: isinstance(exc, _Retry | httpx.TransportError))
        try:
            retry_call(put, policy, event="reigh_upload_failed", log=log, file=path.name)
        except (_Retry, httpx.TransportError) as exc:
            raise StoreUnavailable(f"uploading {path.name} to Reigh's storage failed: {exc}") from None

    def fail_task(self, task_id: str, worker_id: str, *, error_message: str, result: dict[str, Any] | None = None,
                  output_location: str | None = None) -> bool:
        """update-task-status Failed with the error in error_details (Reigh's error_message column);
        Reigh cascades the failure to the row's orchestrator and siblings."""
        ok = self._update_status(task_id, TaskStatus.FAILED, error_details=error_message,
                                 output_location=output_location)
        self._forget(task_id)
        return ok

    def retry_later(self, task_id: str, worker_id: str, *, error_message: str, delay_seconds: float,
                    error_in_output_location: bool = False) -> TaskStatus | None:
        """reigh-worker's requeue (Queued, attempts + 1, error_details, worker cleared). Reigh has no
        run_after: the row is claimable again at once (``delay_seconds`` cannot be kept); this process
        counts the attempts and fails the row after 3, as reigh-worker's retry categories do."""
        with self._lock:
            attempts = self._attempts[task_id] = self._attempts.get(task_id, 0) + 1
        if attempts >= 3:
            ok = self._update_status(task_id, TaskStatus.FAILED, error_details=error_message,
                                     output_location=error_message if error_in_output_location else None)
            self._forget(task_id)
            return TaskStatus.FAILED if ok else None
        ok = self._update_status(task_id, TaskStatus.QUEUED, attempts=attempts,
                                 error_details=f"Retry {attempts}: {error_message[:500]}", clear_worker=True)
        self._forget(task_id)
        return TaskStatus.QUEUED if ok else None

    def requeue_task(self, task_id: str, worker_id: str, *, free_requeues: int = 3) -> bool:
        """A shutdown gives the row back: Queued, worker and generation_started_at cleared (not billed)."""
        ok = self._update_status(task_id, TaskStatus.QUEUED, clear_worker=True)
        self._forget(task_id)
        return ok

    def _update_status(self, task_id: str, status: TaskStatus, *, error_details: str | None = None,
                       output_location: str | None = None, attempts: int | None = None,
                       clear_worker: bool = False) -> bool:
        payload: dict[str, Any] = {"task_id": task_id, "status": status.value}
        if error_details is not None:
            payload["error_details"] = error_details
        if output_location is not None:
            payload["output_location"] = output_location
        if attempts is not None:
            payload["attempts"] = attempts
        if clear_worker:
            payload["clear_worker"] = True
        response = self._post("update-task-status", payload)
        if response.status_code == 200:
            return True
        # 409: the transition is not allowed (the row was cancelled or finished meanwhile); 404: gone.
        log.warning("reigh_status_update_refused", task_id=task_id, status=status.value,
                    answer=response.status_code, detail=response.text[:300])
        return False

    def _forget(self, task_id: str) -> None:
        with self._lock:
            self._held.pop(task_id, None)

    # -- reading other rows. Reigh's functions return no project (claim-next-task aside) and, under the service
    #    role, answer for every project; so a row is read only where its project is known: a held row's
    #    dependencies (get-predecessor-output looks in the holder's project), the orchestrator a held row is the
    #    derived child of, and the children this worker made or found under their derived ids. Any other row
    #    reads as one that does not exist, as another project's row does to ``TaskContext.linked_task``. ----
    def get_task(self, task_id: str) -> Task | None:
        holder = next((held for held in list(self._held.values()) if task_id in held.dependant_on), None)
        if holder is not None:
            response = self._post("get-predecessor-output", {"task_id": holder.task.id}, timeout=15)
            if response.status_code != 200:
                raise StoreUnavailable(f"Reigh's get-predecessor-output answered {response.status_code}: "
                                       f"{response.text[:200]}")
            found = [p for p in response.json().get("predecessors", []) if p.get("predecessor_id") == task_id]
            if not found or found[0].get("status") in (None, "not_found", "error"):
                return None
            project = holder.task.project_id
        else:
            project = self._known_project(task_id)
        if project is None:
            log.debug("edge_link_refused", task_id=task_id, reason="not a dependency, parent or child of a held row")
            return None
        output = self._task_output(task_id)
        if output is None:
            return None
        return self._to_task({"id": task_id, "task_type": (output.get("params") or {}).get("task_type", ""),
                              **output, "project_id": project}, output.get("dependant_on"))

    def _known_project(self, task_id: str) -> str | None:
        """The project of a row this store may read besides dependencies (see above), else None."""
        held = self._held.get(task_id)
        if held is not None:
            return held.task.project_id
        if task_id in self._projects:
            return self._projects[task_id]
        for child in list(self._held.values()):  # a held child names its orchestrator: the same project
            if child.task.child_key and child.task.id == child_task_id(task_id, child.task.child_key):
                return child.task.project_id
        return None

    def _task_output(self, task_id: str) -> dict[str, Any] | None:
        response = self._post("get-task-output", {"task_id": task_id}, retry_404=True)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise StoreUnavailable(f"Reigh's get-task-output answered {response.status_code}: {response.text[:200]}")
        return response.json()

    def _to_task(self, row: dict[str, Any], dependant_on: Any) -> Task:
        deps = tuple(str(d) for d in dependant_on) if isinstance(dependant_on, list) else (
            (str(dependant_on),) if dependant_on else ())
        params = row.get("params")
        child_key = params.get(CHILD_KEY_PARAM) if isinstance(params, dict) else None
        if isinstance(params, dict) and child_key is not None:
            # A child this worker made: create-task's passthrough kept its transport keys in params too.
            transport = {CHILD_KEY_PARAM: child_key, "task_id": str(row.get("id")), "dependant_on": dependant_on}
            params = {k: v for k, v in params.items() if k not in transport or transport[k] != v}
        task = Task.from_row({**row, "params": params, "dependant_on": deps[0] if deps else None,
                              "child_key": child_key})
        if row.get("status") == TaskStatus.IN_PROGRESS.value and row.get("worker_id"):
            with self._lock:
                self._held[task.id] = _Held(task, deps)
        return task

    # -- orchestration: children through create-task, completion by Reigh's complete_task ---------------
    def add_child_tasks(self, parent_task_id: str, children: Sequence[NewTask]) -> list[str]:
        """create-task with the worker passthrough family (``family`` = task type, ``input`` = params with
        the child's pre-made id and dependant_on array), as reigh-worker's add_task_to_db. A child that
        already exists (a re-run orchestrator) is kept; create-task answers that with an error. Children carry
        the orchestrator's parent_generation_id (a shot's): Reigh's complete_task files a segment as a child
        generation under it and the stitch as its new primary variant."""
        held = self._held.get(parent_task_id)
        project_id = held.task.project_id if held else None
        lineage = _reigh_lineage(held.task.params() if held else {})
        ids = []
        for child in children:
            if not child.child_key:
                raise ValueError("every child task needs a child_key (unique among its parent's children)")
            child_id = child.id or child_task_id(parent_task_id, child.child_key)
            project = child.project_id or project_id
            if self._exists(child_id):
                ids.append(child_id)
                continue
            # Reigh finds a child by params.orchestrator_task_id_ref (get-orchestrator-children, complete_task).
            response = self._post("create-task", {"family": child.task_type, "project_id": project, "input": {
                "orchestrator_task_id_ref": parent_task_id, **lineage, **child.params, CHILD_KEY_PARAM: child.child_key,
                "task_id": child_id, "dependant_on": [child.dependant_on] if child.dependant_on else None}},
                timeout=45)
            if response.status_code != 200 and not self._exists(child_id):
                raise TaskError(f"Reigh's create-task refused the {child.task_type} child: {response.status_code} "
                                f"{response.text[:300]}")
            ids.append(child_id)
        with self._lock:  # made under the parent's project (or there already, under the id only it derives)
            self._projects.update(dict.fromkeys(ids, project_id))
        return ids

    def _exists(self, task_id: str) -> bool:
        response = self._post("get-task-status", {"task_id": task_id}, timeout=15)
        return response.status_code == 200

    def list_child_tasks(self, parent_task_id: str) -> list[Task]:
        """get-orchestrator-children of a parent whose project is known, keeping only the rows whose id is the one
        this worker gives a child of that parent under its key (a row of another project naming the parent is
        not one)."""
        response = self._post("get-orchestrator-children", {"orchestrator_task_id": parent_task_id}, retry_404=True)
        if response.status_code != 200:
            raise StoreUnavailable(f"Reigh's get-orchestrator-children answered {response.status_code}: "
                                   f"{response.text[:200]}")
        project = self._known_project(parent_task_id)
        if project is None:
            return []
        tasks = []
        for row in response.json().get("tasks", []):
            key = (row.get("params") or {}).get(CHILD_KEY_PARAM)
            if isinstance(key, str) and str(row.get("id")) == child_task_id(parent_task_id, key):
                tasks.append(self._to_task({**row, "project_id": project}, row.get("dependant_on")))
                with self._lock:
                    self._projects[tasks[-1].id] = project
        return tasks

    def park_awaiting_children(self, task_id: str, worker_id: str, *, result: dict[str, Any] | None = None) -> bool:
        """The orchestrator stays In Progress in Reigh (its update-task-status allows no In Progress →
        In Progress); Reigh's complete_task completes it when its final child completes."""
        self._forget(task_id)
        return True

    def complete_parent(self, task_id: str, *, output_location: str | None, result: dict[str, Any] | None) -> bool:
        """Done by Reigh: complete_task of the final child (travel_stitch) marks its orchestrator Complete."""
        return True

    # -- the worker itself ---------------------------------------------------------------------------
    def register_worker(self, info: WorkerInfo) -> None:
        """Reigh's workers row is made by update-worker-model once a model is resident (service role only)."""

    def touch_worker(self, worker_id: str, *, resident_model: str | None, current_task_id: str | None,
                     status: str = "running", stats: dict[str, Any] | None = None) -> None:
        self._beat_worker(worker_id, resident_model, terminated=status == "stopped")

    def _beat_worker(self, worker_id: str, resident_model: str | None, *, terminated: bool = False) -> None:
        """update-worker-model when the resident model changes (what Reigh's affinity reads), and
        func_worker_heartbeat_with_logs every 20 s, as reigh-worker's guardian: both with the service key,
        or the token when there is none (Reigh then refuses; noted once, never retried)."""
        if self._service_calls_refused:
            return
        key = self.service_key or self.token
        try:
            if resident_model and resident_model != self._worker_model:
                response = self._post("update-worker-model", {"worker_id": worker_id, "current_model": resident_model},
                                      key=key, timeout=5)
                if response.status_code == 200:
                    self._worker_model = resident_model
            now = time.monotonic()
            if now >= self._next_worker_beat or terminated:
                self._next_worker_beat = now + WORKER_BEAT_SECONDS
                beat = self.client.post(  # type: ignore[union-attr]
                    f"{self.supabase_url.rstrip('/')}/rest/v1/rpc/func_worker_heartbeat_with_logs",
                    json={"worker_id_param": worker_id, "vram_total_mb_param": 0, "vram_used_mb_param": 0,
                          "logs_param": [], "status_param": "terminated" if terminated else "active"},
                    headers={"Authorization": f"Bearer {key}", "apikey": key, "Content-Type": "application/json"},
                    timeout=10)
                if beat.status_code in (401, 403):  # granted to service_role only (20260311110000)
                    raise EdgeRefused(f"func_worker_heartbeat_with_logs refused the key ({beat.status_code})")
        except EdgeRefused as exc:
            self._service_calls_refused = True
            log.info("reigh_worker_registry_unavailable", reason=str(exc)[:200],
                     hint="update-worker-model and the worker heartbeat take the service-role key only "
                          "(SUPABASE_SERVICE_ROLE_KEY); without it Reigh's model affinity is off for this worker")
        except (StoreUnavailable, httpx.HTTPError) as exc:
            log.warning("reigh_worker_beat_failed", error=str(exc)[:200])

    def list_workers(self, *, alive_within_seconds: float) -> list[WorkerRecord]:
        return []

    # -- housekeeping: Reigh's own (its functions and cron jobs), nothing for this worker to do ----------
    def reclaim_expired_leases(self) -> list[LeaseReclaim]:
        return []

    def fail_orphaned_dependants(self) -> list[CascadeFailure]:
        return []

    def fail_unrunnable_tasks(self) -> list[UnrunnableTask]:
        return []

    def errors_to_output_location(self, task_ids: Sequence[str]) -> int:
        return 0

    def record_webhook_deliveries(self, task_id: str, worker_id: str, deliveries: Sequence[dict[str, Any]]) -> bool:
        return False  # no edge function writes a finished row's result; the deliveries are in the log

    def housekeeping_turn(self, job: str, *, interval_seconds: float, worker_id: str) -> bool:
        return False

    # -- operator verbs: Reigh's web app owns them -----------------------------------------------------
    def _operator(self, verb: str) -> NotAvailableOverEdge:
        return NotAvailableOverEdge(f"{verb} is not offered by Reigh's edge functions (use Reigh's web app)")

    def add_task(self, task: NewTask) -> str:
        raise self._operator("add_task")

    def list_tasks(self, *, status: TaskStatus | None = None, task_type: str | None = None,
                   limit: int = 100) -> list[Task]:
        raise self._operator("list_tasks")

    def cancel_task(self, task_id: str) -> bool:
        raise self._operator("cancel_task")

    def retry_task(self, task_id: str) -> bool:
        raise self._operator("retry_task")

    def purge_tasks(self, *, older_than_seconds: float, statuses: Sequence[TaskStatus],
                    dry_run: bool = False) -> list[PurgedTask]:
        raise self._operator("purge_tasks")

    def stats(self) -> QueueStats:
        raise self._operator("stats")

    def queued_kinds(self) -> list[QueuedKind]:
        raise self._operator("queued_kinds")

    def close(self) -> None:
        self.client.close()  # type: ignore[union-attr]


def _reigh_lineage(params: dict[str, Any]) -> dict[str, Any]:
    """The generation an orchestrator's outputs belong to in Reigh (travelBetweenImages puts a shot's parent
    generation at the top level and in orchestrator_details)."""
    details = params.get("orchestrator_details")
    parent = params.get("parent_generation_id") or (
        details.get("parent_generation_id") if isinstance(details, dict) else None)
    return {"parent_generation_id": parent} if isinstance(parent, str) and parent else {}


class _Retry(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
