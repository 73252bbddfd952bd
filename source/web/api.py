"""The JSON API under ``/api``: submit, inspect, cancel and retry rows, fetch outputs, follow changes (SSE)."""

# No `from __future__ import annotations`: FastAPI reads the closures' Depends() annotations at runtime.

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter, Cookie, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse

from source.db import NewTask, TaskStatus, TaskStore
from source.db.models import TERMINAL_STATUSES
from source.submission import SubmissionRefused, check_submission
from source.web.auth import COOKIE, Scope, Tokens
from source.web.changes import ChangeHub
from source.web.csrf import CsrfGuard
from source.web.files import IMAGE_SUFFIXES, OutputRoot, ThumbnailRefused, is_remote
from source.web.overview import ALIVE_WITHIN_SECONDS, read_overview, task_json

log = structlog.get_logger(__name__)

MAX_PAGE = 500
MAX_OFFSET = 5000  # the store lists newest first with a limit: deep pages read offset + limit rows
SSE_PING_SECONDS = 15
# POST /api/tasks?wait=S: a held request holds a connection; longer waits poll GET /api/tasks/{id}.
MAX_WAIT_SECONDS = 300
# An output opened directly in a tab renders inert: no scripts, no guessing an HTML type from the bytes.
FILE_HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}


class SubmitTask(BaseModel):
    task_type: str = Field(min_length=1, max_length=200, examples=["t2v"])
    params: dict[str, Any] = Field(default_factory=dict, examples=[{"prompt": "a cat dances", "model": "tiny_t2v"}])
    # The priority column is a 32-bit integer on both backends.
    priority: int = Field(0, ge=-(2**31), le=2**31 - 1, description="Higher runs first.")
    dependant_on: str | None = Field(None, description="Run only after this task is Complete.")
    project_id: str | None = None
    max_attempts: int = Field(3, ge=1)
    id: str | None = Field(None, max_length=200, description="Row id (default: a new uuid4).")


class TaskList(BaseModel):
    tasks: list[dict[str, Any]]
    offset: int
    limit: int
    next_offset: int | None


def refused(field: str, message: str) -> JSONResponse:
    """The same 422 shape FastAPI gives for a malformed body, so clients read one error format."""
    loc = ["body", *field.split(".")] if field else ["body"]
    return JSONResponse(status_code=422, content={"detail": [{"loc": loc, "msg": message, "type": "value_error"}]})


def build_router(store: TaskStore, hub: ChangeHub, outputs: OutputRoot, tokens: Tokens,
                 csrf: CsrfGuard) -> APIRouter:
    bearer = HTTPBearer(auto_error=False, description="A read or write token (`tasks serve --read-token ...`).")

    def scope_of(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
                 cookie: Annotated[str | None, Cookie(alias=COOKIE)] = None) -> Scope:
        # The cookie is what the login page set: a browser's EventSource, <img> and <video> send no header.
        return tokens.scope_of(credentials.credentials if credentials else cookie)

    def needs(required: Scope) -> Callable[..., Scope]:
        def check(scope: Annotated[Scope, Depends(scope_of)]) -> Scope:
            if scope < required:
                if scope is Scope.NONE:
                    raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
                raise HTTPException(403, "this token is read-only")
            return scope
        return check

    def may_write(request: Request, scope: Annotated[Scope, Depends(needs(Scope.WRITE))],
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
                  cookie: Annotated[str | None, Cookie(alias=COOKIE)] = None) -> Scope:
        if credentials is None:  # the cookie, or an open server: what a forged browser request carries
            csrf.check(request, cookie)
        return scope

    read = [Depends(needs(Scope.READ))]
    write = [Depends(may_write)]
    router = APIRouter(prefix="/api", tags=["tasks"])

    def existing(task_id: str) -> dict[str, Any]:
        task = store.get_task(task_id)
        if task is None:
            raise HTTPException(404, f"no task {task_id}")
        row = task_json(task)
        row["children"] = [task_json(c) for c in store.list_child_tasks(task_id)]
        return row

    def create(body: SubmitTask) -> Any:
        try:
            check_submission(body.task_type, body.params)
        except SubmissionRefused as exc:
            return refused(exc.field, exc.message)
        if body.dependant_on and store.get_task(body.dependant_on) is None:
            return refused("dependant_on", f"no task {body.dependant_on}")
        if body.id and store.get_task(body.id) is not None:
            raise HTTPException(409, f"task {body.id} exists already")
        try:
            task_id = store.add_task(NewTask(task_type=body.task_type, params=body.params, id=body.id,
                                             dependant_on=body.dependant_on, priority=body.priority,
                                             project_id=body.project_id, max_attempts=body.max_attempts))
        except ValueError as exc:  # the store's own refusal of a row (a value past a column's limits)
            return refused("", str(exc))
        log.info("task_submitted", task_id=task_id, task_type=body.task_type)
        return existing(task_id)

    async def finished_row(task_id: str, seconds: float) -> str | None:
        """The row's JSON once it is finished (the change hub's shared reads), or None after ``seconds``."""
        async def watch() -> str:
            async for snapshot in hub.snapshots(task_id):
                data = snapshot.tasks_json.get(task_id)
                if data is not None and data != "null" and json.loads(data)["status"] in TERMINAL_STATUSES:
                    return data
            raise AssertionError("the change hub stopped")  # pragma: no cover

        try:
            return await asyncio.wait_for(watch(), seconds)
        except asyncio.TimeoutError:
            return None

    @router.post("/tasks", status_code=201, dependencies=write,
                 responses={202: {"description": "`wait` ran out before the task finished: the row as it stands."},
                            422: {"description": "Unknown task type or invalid params; `loc` names the field."}})
    async def submit(body: SubmitTask, wait: Annotated[float | None, Query(
            gt=0, le=MAX_WAIT_SECONDS, description="Wait up to this many seconds for the task to finish (RunPod's "
                                                   "runsync): 201 with the finished row (its `status` and "
                                                   "`error_message` say how it ended), 202 if still running.")] = None,
                     ) -> Any:
        """Queue a task (the checks of `tasks add`); answers the stored row, with its `id`."""
        created = await run_in_threadpool(create, body)
        if wait is None or isinstance(created, Response):
            return created
        finished = await finished_row(created["id"], wait)
        if finished is not None:
            return Response(finished, status_code=201, media_type="application/json")
        return JSONResponse(jsonable_encoder(await run_in_threadpool(existing, created["id"])), status_code=202)

    @router.get("/tasks", dependencies=read)
    def list_tasks(status: TaskStatus | None = None, task_type: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
                   offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> TaskList:
        """Newest first, filtered by status and task type; page with `offset` and `limit`."""
        rows = store.list_tasks(status=status, task_type=task_type, limit=offset + limit + 1)
        page = rows[offset:offset + limit]
        more = len(rows) > offset + limit and offset + limit <= MAX_OFFSET
        return TaskList(tasks=[task_json(t) for t in page], offset=offset, limit=limit,
                        next_offset=offset + limit if more else None)

    def transition(task_id: str, verb: Callable[[str], bool], event: str, refusal: str) -> dict[str, Any]:
        existing(task_id)
        if not verb(task_id):
            raise HTTPException(409, f"task {task_id} is not {refusal}")
        log.info(event, task_id=task_id)
        return existing(task_id)

    @router.post("/tasks/{task_id:path}/cancel", dependencies=write)
    def cancel(task_id: str) -> dict[str, Any]:
        """Queued/In Progress → Cancelled (a running generation stops at its next step)."""
        return transition(task_id, store.cancel_task, "task_cancelled_over_http", "Queued or In Progress")

    @router.post("/tasks/{task_id:path}/retry", dependencies=write)
    def retry(task_id: str) -> dict[str, Any]:
        """Failed/Cancelled → Queued, attempts reset."""
        return transition(task_id, store.retry_task, "task_retried_over_http", "Failed or Cancelled")

    @router.get("/stats", dependencies=read)
    def stats() -> dict[str, Any]:
        """Counts by status and by worker (as `tasks stats --json`)."""
        result = store.stats()
        return {"by_status": result.by_status, "by_worker": result.by_worker}

    @router.get("/overview", dependencies=read)
    def overview() -> dict[str, Any]:
        """What the status page shows: counts, last hour's pickup latency and throughput, workers, recent rows."""
        return read_overview(store)

    @router.get("/workers", dependencies=read)
    def workers(alive_within: Annotated[float, Query(gt=0)] = ALIVE_WITHIN_SECONDS) -> list[dict[str, Any]]:
        return [asdict(w) for w in store.list_workers(alive_within_seconds=alive_within)]

    def output_of(task_id: str) -> str:
        task = store.get_task(task_id)
        if task is None:
            raise HTTPException(404, f"no task {task_id}")
        if not task.output_location:
            raise HTTPException(404, f"task {task_id} has no output")
        return task.output_location

    @router.get("/tasks/{task_id:path}/output", dependencies=read, response_class=FileResponse,
                responses={307: {"description": "Storage output: redirected to its URL"}})
    def output(task_id: str) -> Any:
        """The output file: local files from inside the output root only; Storage URLs are redirected."""
        location = output_of(task_id)
        if is_remote(location):
            return RedirectResponse(location, status_code=307)
        path = outputs.local_file(location)
        if path is None:
            raise HTTPException(404, "the output is not a file under the output root")
        return FileResponse(path, headers=FILE_HEADERS)

    @router.get("/tasks/{task_id:path}/thumbnail", dependencies=read, response_class=FileResponse)
    def thumbnail(task_id: str) -> Any:
        """A JPEG of the output's first frame, rendered on first request and cached under the output root."""
        location = output_of(task_id)
        if is_remote(location):
            if Path(urlsplit(location).path).suffix.lower() in IMAGE_SUFFIXES:
                return RedirectResponse(location, status_code=307)  # a Storage picture is its own thumbnail
            raise HTTPException(404, "no thumbnail for a Storage video (the page shows the video's first frame)")
        path = outputs.local_file(location)
        try:
            picture = outputs.thumbnail(path) if path is not None else None
        except ThumbnailRefused as exc:
            raise HTTPException(exc.status, str(exc)) from None
        if picture is None:
            raise HTTPException(404, "no thumbnail for this output")
        return FileResponse(picture, media_type="image/jpeg", headers=FILE_HEADERS)

    @router.get("/files/{path:path}", dependencies=read, response_class=FileResponse)
    def files(path: str) -> Any:
        """Any file under the output root, by its path relative to the root."""
        found = outputs.local_file(path) if not path.startswith("/") else None
        if found is None:
            raise HTTPException(404, "no such file under the output root")
        return FileResponse(found, headers=FILE_HEADERS)

    @router.get("/events", dependencies=read, response_class=EventSourceResponse)
    async def events() -> EventSourceResponse:
        """Server-Sent Events: an `overview` event (as GET /api/overview) whenever the queue changes."""
        async def stream() -> AsyncIterator[dict[str, str]]:
            last = None
            async for snapshot in hub.snapshots():
                data = snapshot.overview_json
                if data != last:
                    last = data
                    yield {"event": "overview", "data": data}
        return EventSourceResponse(stream(), ping=SSE_PING_SECONDS)

    @router.get("/tasks/{task_id:path}/events", dependencies=read, response_class=EventSourceResponse)
    async def task_events(task_id: str) -> EventSourceResponse:
        """Server-Sent Events: a `task` event (as GET /api/tasks/{id}) whenever this row or a child changes."""
        async def stream() -> AsyncIterator[dict[str, str]]:
            last = None
            async for snapshot in hub.snapshots(task_id):
                data = snapshot.tasks_json.get(task_id)
                if data is None:
                    continue  # read before this client started following the row
                if data != last:
                    last = data
                    yield {"event": "task", "data": data}
        return EventSourceResponse(stream(), ping=SSE_PING_SECONDS)

    # Last: ids may hold "/" ({task_id:path}), so the routes above, which end in a verb, must match first.
    @router.get("/tasks/{task_id:path}", dependencies=read)
    def get_task(task_id: str) -> dict[str, Any]:
        """The whole row (params, result, timings, error) and its children, oldest first."""
        return existing(task_id)

    return router
