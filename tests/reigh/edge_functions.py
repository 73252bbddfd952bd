"""A test server of ours for Reigh's edge functions, over the Reigh-shaped fixture schema on the real Postgres.

Reigh's functions are Deno code over PostgREST and Supabase Storage, none of which runs here; this app does what
each one does to the database, read from its source in banodoco/reigh-app (supabase/functions, at 3a6fd3d). Each
route names the function and file it follows. What it leaves out is said where it is left out.

Storage is a folder: objects are written under ``<root>/image_uploads/<path>`` and served at Supabase's public URL
shape, ``/storage/v1/object/public/image_uploads/<path>``; signed uploads are PUT to
``/storage/v1/object/upload/sign/image_uploads/<path>``."""

from __future__ import annotations

import base64
import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
from psycopg.rows import dict_row
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

MEDIA_BUCKET = "image_uploads"  # _shared/storagePaths.ts


@dataclass
class Caller:
    """_shared/auth.ts authenticateRequest: the service-role key itself, or a PAT looked up in user_api_tokens
    with .eq("token", token) (plain tokens)."""

    is_service_role: bool
    user_id: str | None


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ReighEdgeFunctions:
    db_url: str
    service_key: str
    storage_root: Path
    base_url: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    # -- plumbing ------------------------------------------------------------------------------------
    @contextmanager
    def admin(self) -> Iterator[psycopg.Connection]:
        """supabaseAdmin: the service-role client (PostgREST sets request.jwt.claims; Reigh's timing trigger and
        RLS policies let service_role through)."""
        with psycopg.connect(self.db_url, autocommit=True, row_factory=dict_row) as conn:
            conn.execute("SELECT set_config('request.jwt.claims', '{\"role\": \"service_role\"}', false)")
            yield conn

    def authenticate(self, request: Request) -> Caller:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise Refused(401, "Missing or invalid Authorization header")
        token = header[7:]
        if token == self.service_key:
            return Caller(True, None)
        with self.admin() as db:
            row = db.execute("SELECT user_id FROM user_api_tokens WHERE token = %s", (token,)).fetchone()
        if row is None:
            raise Refused(403, "Invalid or expired token")
        return Caller(False, str(row["user_id"]))

    def authorize_task(self, db: psycopg.Connection, caller: Caller, task_id: str) -> dict[str, Any]:
        """_shared/taskActorPolicy.ts authorizeTaskActor: the service role may touch any task; a PAT only tasks
        of its user's projects."""
        try:
            uuid.UUID(task_id)
        except ValueError:
            raise Refused(404, "Task not found") from None
        row = db.execute("SELECT t.*, p.user_id AS owner FROM tasks t JOIN projects p ON p.id = t.project_id "
                         "WHERE t.id = %s", (task_id,)).fetchone()
        if row is None:
            raise Refused(404, "Task not found")
        if not caller.is_service_role and str(row["owner"]) != caller.user_id:
            raise Refused(403, "Forbidden: task belongs to another user")
        return row

    def public_url(self, path: str) -> str:
        return f"{self.base_url}/storage/v1/object/public/{MEDIA_BUCKET}/{path}"

    def store_object(self, path: str, data: bytes) -> str:
        target = self.storage_root / MEDIA_BUCKET / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return self.public_url(path)

    # -- the functions -------------------------------------------------------------------------------
    def claim_next_task(self, caller: Caller, body: dict[str, Any]) -> Response:
        """claim-next-task/index.ts: the service role calls claim_next_task_service_role(worker_id, false,
        run_type, same_model_only, max_task_wait_minutes); a PAT calls claim_next_task_user_pat(user, false)
        with no run_type ("PAT users run on their own hardware — no run_type filtering"). 204 when empty."""
        worker_id = body.get("worker_id") if isinstance(body.get("worker_id"), str) else f"edge_{uuid.uuid4()}"
        run_type = body.get("run_type") if body.get("run_type") in ("gpu", "api") else None
        wait = body.get("max_task_wait_minutes")
        wait = wait if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > 0 else 5
        with self.admin() as db, db.transaction():
            if caller.is_service_role:
                row = db.execute("SELECT * FROM claim_next_task_service_role(%s, false, %s, %s, %s)",
                                 (worker_id, run_type, body.get("same_model_only") is True, int(wait))).fetchone()
            else:
                row = db.execute("SELECT * FROM claim_next_task_user_pat(%s, false)", (caller.user_id,)).fetchone()
        if row is None:
            return Response(status_code=204)
        return JSONResponse({"task_id": str(row["task_id"]), "params": row["params"], "task_type": row["task_type"],
                             "project_id": str(row["project_id"])})

    def task_counts(self, caller: Caller, body: dict[str, Any]) -> Response:
        """task-counts/index.ts, reduced to the totals reigh-worker reads (queued_only, active_only): Queued rows
        of the given run_type whose dependencies are all Complete (the caller's own projects for a PAT)."""
        run_type = body.get("run_type") if body.get("run_type") in ("gpu", "api") else None
        with self.admin() as db:
            counts = db.execute(
                "SELECT count(*) FILTER (WHERE t.status = 'Queued' AND all_dependencies_complete(t.dependant_on)) "
                "         AS queued, count(*) FILTER (WHERE t.status = 'In Progress') AS active "
                "FROM tasks t JOIN projects p ON p.id = t.project_id "
                "WHERE (%s::text IS NULL OR get_task_run_type(t.task_type) = %s) AND (%s OR p.user_id = %s::uuid)",
                (run_type, run_type, caller.is_service_role, caller.user_id)).fetchone()
        return JSONResponse({"totals": {"queued_only": counts["queued"], "active_only": counts["active"],
                                        "eligible_queued": counts["queued"]}})

    def get_task_status(self, caller: Caller, body: dict[str, Any]) -> Response:
        """get-task-status/index.ts: {status} after authorizeTaskActor."""
        with self.admin() as db:
            row = self.authorize_task(db, caller, str(body.get("task_id") or ""))
        return JSONResponse({"status": row["status"]})

    def get_task_output(self, caller: Caller, body: dict[str, Any]) -> Response:
        """get-task-output/index.ts: {status, output_location, params, dependant_on}."""
        with self.admin() as db:
            row = self.authorize_task(db, caller, str(body.get("task_id") or ""))
        deps = [str(d) for d in row["dependant_on"]] if row["dependant_on"] is not None else None
        return JSONResponse({"status": row["status"], "output_location": row["output_location"],
                             "params": row["params"], "dependant_on": deps})

    def get_predecessor_output(self, caller: Caller, body: dict[str, Any]) -> Response:
        """get-predecessor-output/index.ts, path 1 (the dependant_on array): each dependency looked up within the
        task's own project; output_location only for Complete ones. (Path 2, generation siblings for
        individual segment regenerations, is not served: no row here asks for it.)"""
        with self.admin() as db:
            task = self.authorize_task(db, caller, str(body.get("task_id") or ""))
            deps = [str(d) for d in task["dependant_on"] or []]
            if not deps:
                return JSONResponse({"predecessor_id": None, "output_location": None, "predecessors": []})
            rows = {str(r["id"]): r for r in db.execute(
                "SELECT id, status, output_location FROM tasks WHERE project_id = %s AND id = ANY(%s::uuid[])",
                (task["project_id"], deps)).fetchall()}
        predecessors = [{"predecessor_id": d, "output_location": None, "status": "not_found"} if d not in rows else
                        {"predecessor_id": d, "status": rows[d]["status"],
                         "output_location": rows[d]["output_location"] if rows[d]["status"] == "Complete" else None}
                        for d in deps]
        all_complete = all(p["status"] == "Complete" and p["output_location"] for p in predecessors)
        first = predecessors[0]
        return JSONResponse({"predecessor_id": first["predecessor_id"],
                             "output_location": first["output_location"] if all_complete else None,
                             "status": "Complete" if all_complete else first["status"],
                             "predecessors": predecessors, "all_complete": all_complete})

    def get_orchestrator_children(self, caller: Caller, body: dict[str, Any]) -> Response:
        """get-orchestrator-children/index.ts: rows naming the orchestrator in orchestration_contract,
        orchestrator_task_id_ref, orchestrator_task_id or orchestrator_details.orchestrator_task_id, oldest first;
        within the parent's project for a PAT only (the service role sees every project)."""
        parent_id = str(body.get("orchestrator_task_id") or "")
        with self.admin() as db:
            parent = self.authorize_task(db, caller, parent_id)
            rows = db.execute(
                "SELECT id, task_type, status, params, output_location FROM tasks "
                "WHERE (%s OR project_id = %s) AND (params->'orchestration_contract'->>'orchestrator_task_id' = %s "
                "   OR params->>'orchestrator_task_id_ref' = %s OR params->>'orchestrator_task_id' = %s "
                "   OR params->'orchestrator_details'->>'orchestrator_task_id' = %s) ORDER BY created_at",
                (caller.is_service_role, parent["project_id"], parent_id, parent_id, parent_id, parent_id)).fetchall()
        return JSONResponse({"tasks": [{**r, "id": str(r["id"])} for r in rows]})

    def create_task(self, caller: Caller, body: dict[str, Any]) -> Response:
        """create-task, the worker passthrough family (resolvers/workerPassthrough.ts): a family that is a
        task_types name becomes a Queued row with params = input as sent, id = input.task_id, dependant_on =
        input.dependant_on; the caller must own project_id (service role: any)."""
        family, project_id, params = body.get("family"), body.get("project_id"), body.get("input")
        if not isinstance(family, str) or not isinstance(params, dict):
            raise Refused(400, "family and input are required")
        with self.admin() as db:
            project = db.execute("SELECT user_id FROM projects WHERE id = %s", (project_id,)).fetchone()
            if project is None:
                raise Refused(404, "Project not found")
            if not caller.is_service_role and str(project["user_id"]) != caller.user_id:
                raise Refused(403, "Forbidden: you don't own this project")
            if db.execute("SELECT 1 FROM task_types WHERE name = %s AND is_active", (family,)).fetchone() is None:
                raise Refused(400, f"Unknown task family: {family}")
            deps = params.get("dependant_on") if isinstance(params.get("dependant_on"), list) else None
            try:
                row = db.execute("INSERT INTO tasks (id, project_id, task_type, params, status, dependant_on) "
                                 "VALUES (COALESCE(%s::uuid, gen_random_uuid()), %s, %s, %s, 'Queued', %s::uuid[]) "
                                 "RETURNING id", (params.get("task_id"), project_id, family, json.dumps(params),
                                                  deps)).fetchone()
            except psycopg.errors.UniqueViolation:
                raise Refused(500, "duplicate key value violates unique constraint \"tasks_pkey\"") from None
        return JSONResponse({"task_ids": [str(row["id"])], "task_id": str(row["id"])})

    def update_task_status(self, caller: Caller, body: dict[str, Any]) -> Response:
        """update-task-status (index.ts, request.ts, transitions.ts, payload.ts, taskUpdates.ts): the allowed
        transitions (In Progress → Complete/Failed/Cancelled/Queued, Queued → In Progress/Failed/Cancelled, none
        out of a final state; 409 otherwise), then error_details → error_message, clear_worker → worker_id and
        generation_started_at NULL, attempts as sent; Failed/Cancelled cascade (``_cascade``). Left out: the
        orchestrator billing on cancel (cancellationBilling.ts), which the fixture's trigger already does."""
        task_id, status = str(body.get("task_id") or ""), body.get("status")
        if status not in ("Queued", "In Progress", "Complete", "Failed", "Cancelled"):
            raise Refused(400, "Invalid status")
        allowed = {"Queued": ("In Progress", "Failed", "Cancelled"),
                   "In Progress": ("Complete", "Failed", "Cancelled", "Queued")}
        with self.admin() as db, db.transaction():
            task = self.authorize_task(db, caller, task_id)
            reset_only = (body.get("reset_generation_started_at") is True and task["status"] == "In Progress"
                          and status == "In Progress")
            if not reset_only and status not in allowed.get(task["status"], ()):
                return JSONResponse({"success": False, "current_status": task["status"], "requested_status": status,
                                     "message": f"Invalid status transition: {task['status']} → {status}"}, 409)
            sets, values = ["status = %s", "updated_at = now()"], [status]
            if status == "In Progress" or reset_only:
                sets.append("generation_started_at = now()")
            if status == "Complete":
                sets.append("generation_processed_at = now()")
            for key, column in (("output_location", "output_location"), ("attempts", "attempts"),
                                ("error_details", "error_message")):
                if key in body:
                    sets.append(f"{column} = %s")
                    values.append(body[key])
            if body.get("clear_worker") is True:
                sets += ["worker_id = NULL", "generation_started_at = NULL"]
            db.execute(f"UPDATE tasks SET {', '.join(sets)} WHERE id = %s", (*values, task_id))
            if status in ("Failed", "Cancelled"):
                self._cascade(db, task, status)
        return JSONResponse({"success": True, "task_id": task_id, "status": status})

    def _cascade(self, db: psycopg.Connection, task: dict[str, Any], status: str) -> None:
        """cascade.ts: the orchestrator is the row's reference (extractOrchestratorRef, a uuid) or, for a row
        with orchestrator_details, the row itself; then cascade_task_failure (20260331040000) as written there:
        every unfinished row naming that orchestrator, and the orchestrator when a child failed (no project
        filter in Reigh's function)."""
        params = task["params"] or {}
        ref = params.get("orchestrator_task_id_ref") or (params.get("orchestration_contract") or {}).get(
            "orchestrator_task_id")
        is_orchestrator = False
        try:
            orchestrator = str(uuid.UUID(str(ref))) if ref else None
        except ValueError:
            orchestrator = None
        if orchestrator is None and "orchestrator_details" in params:
            orchestrator, is_orchestrator = str(task["id"]), True
        if orchestrator is None:
            return
        db.execute(
            "UPDATE tasks SET status = %s::task_status, updated_at = now(), error_message = 'Cascaded ' || lower(%s) "
            "|| ' from related task ' || %s WHERE id <> %s AND status NOT IN ('Complete', 'Failed', 'Cancelled') "
            "AND ((NOT %s AND id = %s::uuid) OR params->>'orchestrator_task_id_ref' = %s "
            "OR params->'orchestration_contract'->>'orchestrator_task_id' = %s OR params->>'orchestrator_task_id' = %s "
            "OR params->'orchestrator_details'->>'orchestrator_task_id' = %s "
            "OR params->'originalParams'->'orchestrator_details'->>'orchestrator_task_id' = %s)",
            (status, status, str(task["id"]), task["id"], is_orchestrator, orchestrator, *[orchestrator] * 5))

    def generate_upload_url(self, caller: Caller, body: dict[str, Any]) -> Response:
        """generate-upload-url/index.ts: signed upload URLs for <user>/tasks/<task>/<filename> (and a thumbnail
        under .../thumbnails/)."""
        task_id, filename = str(body.get("task_id") or ""), body.get("filename")
        if not filename or not body.get("content_type"):
            raise Refused(400, "task_id, filename, and content_type required")
        with self.admin() as db:
            task = self.authorize_task(db, caller, task_id)
        path = f"{task['owner']}/tasks/{task_id}/{filename}"
        answer = {"upload_url": f"{self.base_url}/storage/v1/object/upload/sign/{MEDIA_BUCKET}/{path}?token=t",
                  "storage_path": path, "token": "t"}
        if body.get("generate_thumbnail_url") is True:
            thumb = f"{task['owner']}/tasks/{task_id}/thumbnails/thumb_{int(time.time() * 1000)}.jpg"
            answer |= {"thumbnail_upload_url": f"{self.base_url}/storage/v1/object/upload/sign/{MEDIA_BUCKET}/{thumb}"
                       "?token=t", "thumbnail_storage_path": thumb}
        return JSONResponse(answer)

    def complete_task(self, caller: Caller, body: dict[str, Any]) -> Response:
        """complete_task (handler.ts, request.ts, storage.ts, generation.ts + generation-handlers.ts,
        orchestratorCore.ts, billing.ts):
        1. MODE 1 (file_data base64 + filename, first_frame_data thumbnail) stored at <user>/tasks/<task>/<file>;
           MODE 3/4 (storage_path, thumbnail_storage_path) must exist in storage.
        2. A generation of the task type's content_type ('image' when unset), unless the task type's category
           is 'orchestration' or params.skip_generation: for a travel_stitch with params.parent_generation_id a
           new primary variant on that generation (variant_on_parent); else a child generation under
           params.parent_generation_id (child_order = segment_index); else a standalone one. Each new generation
           gets its 'original' primary variant (location, thumbnail), and tasks.generation_created = true. The
           generation's location is the primary variant's, which Reigh's variant trigger copies; done here.
        3. The task Complete (only while In Progress), output_location = public URL, generation_processed_at.
        4. A travel_stitch (SEGMENT_TYPE_CONFIG's final step) completes its orchestrator with the same URL.
        5. Service role only: calculate-task-cost for a task that is not a sub-task (per_second:
           base_cost_per_second x max(1, ceil(seconds))), and for the orchestrator just completed the sum of its
           children's seconds: a credits_ledger 'spend' row, which Reigh's ledger trigger takes off the balance.
        Left out: shot placement and timeline placement (no row here names a shot or timeline), variants on
        based_on / child_generation_id rows, rate limiting."""
        task_id = str(body.get("task_id") or "")
        storage_path = body.get("storage_path")
        if not storage_path and not (body.get("file_data") and body.get("filename")):
            raise Refused(400, "task_id, file_data (base64), and filename required (or use storage_path for "
                               "pre-uploaded files)")
        with self.admin() as db:
            task = self.authorize_task(db, caller, task_id)
            kind = db.execute("SELECT category, run_type, billing_type, base_cost_per_second, content_type FROM task_types "
                              "WHERE name = %s", (task["task_type"],)).fetchone()
        owner = str(task["owner"])
        if storage_path:
            if not (self.storage_root / MEDIA_BUCKET / storage_path).is_file():
                raise Refused(404, "Referenced file does not exist or is not accessible in storage")
            filename, public_url = Path(storage_path).name, self.public_url(storage_path)
            thumb_path = body.get("thumbnail_storage_path")
            thumbnail_url = self.public_url(thumb_path) if thumb_path else None
        else:
            filename = Path(str(body["filename"])).name
            public_url = self.store_object(f"{owner}/tasks/{task_id}/{filename}", base64.b64decode(body["file_data"]))
            thumbnail_url = (self.store_object(f"{owner}/tasks/{task_id}/thumbnails/{body['first_frame_filename']}",
                                               base64.b64decode(body["first_frame_data"]))
                             if body.get("first_frame_data") else None)
        params = task["params"] or {}
        with self.admin() as db, db.transaction():
            if kind["category"] != "orchestration" and params.get("skip_generation") is not True:
                self._create_generation(db, task, params, kind["content_type"] or "image", public_url, thumbnail_url)
            db.execute("UPDATE tasks SET status = 'Complete', output_location = %s, generation_processed_at = now(), "
                       "updated_at = now() WHERE id = %s AND status = 'In Progress'", (public_url, task_id))
            orchestrator = self._complete_orchestrator(db, task, params, public_url)
            if caller.is_service_role:
                if not (params.get("orchestrator_task_id_ref") or params.get("orchestration_contract")):
                    self._bill(db, task_id, owner, kind)
                if orchestrator is not None:
                    self._bill(db, orchestrator, owner, None)
        return JSONResponse({"success": True, "public_url": public_url, "thumbnail_url": thumbnail_url,
                             "follow_up": {"status": "ok", "issues": []}})

    def _create_generation(self, db: psycopg.Connection, task: dict[str, Any], params: dict[str, Any],
                           kind: str, public_url: str, thumbnail_url: str | None) -> None:
        parent = params.get("parent_generation_id") or (params.get("orchestrator_details") or {}).get(
            "parent_generation_id")
        child_order = params.get("child_order", params.get("segment_index"))
        if parent is not None and task["task_type"] == "travel_stitch":
            # generation.ts: a stitch with a parent generation is a new primary variant on it (variant_on_parent)
            db.execute("UPDATE generation_variants SET is_primary = false WHERE generation_id = %s", (parent,))
            variant = db.execute(
                "INSERT INTO generation_variants (generation_id, project_id, location, thumbnail_url, params, "
                "is_primary, variant_type) VALUES (%s, %s, %s, %s, %s, true, 'travel_stitch') RETURNING id",
                (parent, task["project_id"], public_url, thumbnail_url,
                 json.dumps({"source_task_id": str(task["id"])}))).fetchone()
            db.execute("UPDATE generations SET primary_variant_id = %s, location = %s, thumbnail_url = %s, "
                       "updated_at = now() WHERE id = %s", (variant["id"], public_url, thumbnail_url, parent))
            db.execute("UPDATE tasks SET generation_created = true WHERE id = %s", (task["id"],))
            return
        generation = db.execute(
            "INSERT INTO generations (tasks, params, type, project_id, name, parent_generation_id, is_child, "
            "child_order, location, thumbnail_url) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (json.dumps([str(task["id"])]), json.dumps({**params, "source_task_id": str(task["id"])}), kind,
             task["project_id"], params.get("generation_name"), parent, parent is not None,
             child_order if parent is not None else None, public_url, thumbnail_url)).fetchone()
        variant = db.execute(
            "INSERT INTO generation_variants (generation_id, project_id, location, thumbnail_url, params, is_primary, "
            "variant_type) VALUES (%s, %s, %s, %s, %s, true, 'original') RETURNING id",
            (generation["id"], task["project_id"], public_url, thumbnail_url,
             json.dumps({"source_task_id": str(task["id"]), "created_from": "generation_original"}))).fetchone()
        db.execute("UPDATE generations SET primary_variant_id = %s WHERE id = %s", (variant["id"], generation["id"]))
        db.execute("UPDATE tasks SET generation_created = true WHERE id = %s", (task["id"],))

    def _complete_orchestrator(self, db: psycopg.Connection, task: dict[str, Any], params: dict[str, Any],
                               public_url: str) -> str | None:
        if task["task_type"] != "travel_stitch":
            return None
        ref = params.get("orchestrator_task_id_ref") or (params.get("orchestration_contract") or {}).get(
            "orchestrator_task_id")
        if not ref:
            return None
        done = db.execute("UPDATE tasks SET status = 'Complete', output_location = %s, generation_processed_at = "
                          "now(), updated_at = now() WHERE id::text = %s AND project_id = %s AND status <> 'Complete' "
                          "RETURNING id", (public_url, ref, task["project_id"])).fetchone()
        return str(done["id"]) if done else None

    def _bill(self, db: psycopg.Connection, task_id: str, owner: str, kind: dict[str, Any] | None) -> None:
        if kind is None:  # an orchestrator: its children's seconds
            row = db.execute("SELECT t.task_type, sum(extract(epoch FROM c.generation_processed_at - "
                             "c.generation_started_at)) AS seconds FROM tasks t JOIN tasks c ON "
                             "c.params->>'orchestrator_task_id_ref' = t.id::text AND c.status = 'Complete' "
                             "WHERE t.id = %s GROUP BY t.task_type", (task_id,)).fetchone()
            kind = db.execute("SELECT billing_type, base_cost_per_second FROM task_types WHERE name = %s",
                              (row["task_type"],)).fetchone()
            seconds = float(row["seconds"] or 0)
        else:
            row = db.execute("SELECT extract(epoch FROM generation_processed_at - generation_started_at) AS seconds "
                             "FROM tasks WHERE id = %s", (task_id,)).fetchone()
            seconds = float(row["seconds"] or 0)
        if kind["billing_type"] != "per_second":
            return
        duration = max(1, math.ceil(seconds))
        db.execute("INSERT INTO credits_ledger (user_id, task_id, amount, type, metadata) "
                   "VALUES (%s, %s, %s, 'spend', %s)",
                   (owner, task_id, -float(kind["base_cost_per_second"]) * duration,
                    json.dumps({"duration_seconds": duration})))

    def update_worker_model(self, caller: Caller, body: dict[str, Any]) -> Response:
        """update-worker-model/index.ts: service role only; update the workers row (current_model,
        last_heartbeat, status active), or insert it with instance_type 'external'."""
        if not caller.is_service_role:
            raise Refused(403, "Service role required")
        worker_id, model = str(body.get("worker_id") or "").strip(), str(body.get("current_model") or "").strip()
        if not worker_id or not model:
            raise Refused(400, "Missing required field: worker_id")
        with self.admin() as db:
            db.execute("INSERT INTO workers (id, instance_type, status, last_heartbeat, current_model) "
                       "VALUES (%s, %s, 'active', now(), %s) ON CONFLICT (id) DO UPDATE SET current_model = "
                       "EXCLUDED.current_model, last_heartbeat = now(), status = 'active'",
                       (worker_id, body.get("instance_type") or "external", model))
        return JSONResponse({"success": True, "worker_id": worker_id, "current_model": model})

    def worker_heartbeat(self, caller: Caller, body: dict[str, Any]) -> Response:
        """PostgREST rpc func_worker_heartbeat_with_logs (final form: 20260331060000, service role only since
        20260311110000): the worker's row gets last_heartbeat, status_param and its VRAM figures in metadata, or
        is inserted as an 'external' worker. Left out: the log batch (system_logs is not in the fixture) and
        status 'crashed', which requeues the worker's rows (this worker never sends it: it has no guardian)."""
        if not caller.is_service_role:
            raise Refused(401, "JWT expected")  # PostgREST: a PAT is not a JWT
        status = str(body.get("status_param") or "active")
        with self.admin() as db:
            db.execute("INSERT INTO workers (id, instance_type, status, last_heartbeat, metadata) "
                       "VALUES (%s, 'external', %s, now(), %s) ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, "
                       "last_heartbeat = now(), metadata = workers.metadata || EXCLUDED.metadata",
                       (body.get("worker_id_param"), status,
                        json.dumps({"vram_total_mb": body.get("vram_total_mb_param"),
                                    "vram_used_mb": body.get("vram_used_mb_param")})))
        return JSONResponse({"success": True})

    # -- the app -------------------------------------------------------------------------------------
    def app(self) -> Starlette:
        functions = {"claim-next-task": self.claim_next_task, "task-counts": self.task_counts,
                     "get-task-status": self.get_task_status, "get-task-output": self.get_task_output,
                     "get-predecessor-output": self.get_predecessor_output,
                     "get-orchestrator-children": self.get_orchestrator_children, "create-task": self.create_task,
                     "update-task-status": self.update_task_status, "generate-upload-url": self.generate_upload_url,
                     "complete_task": self.complete_task, "update-worker-model": self.update_worker_model}

        def endpoint(handler: Any, name: str) -> Any:
            async def call(request: Request) -> Response:
                try:
                    body = await request.json()
                except ValueError:
                    return PlainTextResponse("Invalid JSON body", 400)
                self.calls.append((name, body))
                try:
                    caller = self.authenticate(request)
                    return await _in_thread(handler, caller, body if isinstance(body, dict) else {})
                except Refused as exc:
                    return PlainTextResponse(exc.message, exc.status)
            return call

        async def public_object(request: Request) -> Response:
            target = self.storage_root / MEDIA_BUCKET / request.path_params["path"]
            return FileResponse(target) if target.is_file() else PlainTextResponse("Object not found", 404)

        async def signed_upload(request: Request) -> Response:
            self.store_object(request.path_params["path"], await request.body())
            return JSONResponse({"Key": f"{MEDIA_BUCKET}/{request.path_params['path']}"})

        routes = [Route(f"/functions/v1/{name}", endpoint(handler, name), methods=["POST"])
                  for name, handler in functions.items()]
        routes += [Route("/rest/v1/rpc/func_worker_heartbeat_with_logs",
                         endpoint(self.worker_heartbeat, "func_worker_heartbeat_with_logs"), methods=["POST"]),
                   Route(f"/storage/v1/object/public/{MEDIA_BUCKET}/{{path:path}}", public_object, methods=["GET"]),
                   Route(f"/storage/v1/object/upload/sign/{MEDIA_BUCKET}/{{path:path}}", signed_upload,
                         methods=["PUT"])]
        return Starlette(routes=routes)


async def _in_thread(handler: Any, caller: Caller, body: dict[str, Any]) -> Response:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(handler, caller, body)


@contextmanager
def serve(functions: ReighEdgeFunctions) -> Iterator[str]:
    """Run the app on a free local port in a thread; yields its base URL (the worker's --supabase-url)."""
    config = uvicorn.Config(functions.app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the edge-function test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    functions.base_url = f"http://127.0.0.1:{port}"
    try:
        yield functions.base_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
