"""Edge-function mode: real worker.py processes started as a reigh-worker user starts one (--reigh-access-token,
a PAT or the service-role key) claim and complete rows built the way Reigh's create-task builds them, through our
stand-in for Reigh's edge functions (tests/reigh/edge_functions.py) over the Reigh-shaped fixture schema."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from tests.helpers import REPO_ROOT, WORKER, _worker_env, wait_for
from tests.orchestrators.conftest import keyframes  # noqa: F401  (fixture)
from tests.reigh.conftest import add_reigh_user, insert_reigh_task
from tests.reigh.edge_functions import ReighEdgeFunctions, serve

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SERVICE_KEY = "sb_secret_" + secrets.token_hex(16)


@pytest.fixture
def edge(reigh_url: str, tmp_path: Path) -> Iterator[ReighEdgeFunctions]:
    functions = ReighEdgeFunctions(reigh_url, SERVICE_KEY, tmp_path / "storage")
    with serve(functions):
        yield functions


def run_edge_worker(edge: ReighEdgeFunctions, token: str, out: Path, *extra: str, timeout: float = 240,
                    env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python worker.py --supabase-url … --reigh-access-token …`` as reigh-worker's README starts one."""
    command = [sys.executable, str(WORKER), "--db-type", "supabase", "--supabase-url", edge.base_url,
               "--reigh-access-token", token, "--main-output-dir", str(out), "--log-format", "json",
               "--allow-private-urls", "--once", *extra]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          env=_worker_env(env))


def rows(url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(sql, args).fetchall()


def task(url: str, task_id: UUID) -> dict[str, Any]:
    return rows(url, "SELECT * FROM tasks WHERE id = %s", task_id)[0]


# Row builders: params as Reigh's create-task resolvers build them (written from their source), the model named
# by the tiny definition these tests run.
def image_row(prompt: str, seed: int = 7) -> dict[str, Any]:
    """resolvers/imageGeneration.ts buildTaskParams for a Wan 2.2 text-to-image (task type wan_2_2_t2i)."""
    return {"task_id": f"wan_2_2_t2i_{secrets.token_hex(4)}", "model": "tiny_t2v_2_2", "prompt": prompt,
            "resolution": "32x32", "seed": seed, "steps": 2, "add_in_position": False}


def t2v_row(prompt: str) -> dict[str, Any]:
    """A t2v row of Reigh's worker passthrough family (create-task keeps the input as params)."""
    return {"model": "tiny_t2v", "prompt": prompt, "resolution": "32x32", "video_length": 5, "seed": 3,
            "num_inference_steps": 2}


def test_service_key_worker_serves_reigh_cloud_users_and_leaves_what_reigh_would_not_give(edge, reigh_url, tmp_path):
    paying, broke = add_reigh_user(reigh_url), add_reigh_user(reigh_url, credits=0)
    image = insert_reigh_task(reigh_url, paying.project_id, "wan_2_2_t2i", image_row("a red kite"))
    second = insert_reigh_task(reigh_url, paying.project_id, "wan_2_2_t2i", image_row("a blue kite", seed=8))
    api_row = insert_reigh_task(reigh_url, paying.project_id, "qwen_image", {"prompt": "an api image"})
    unpaid = insert_reigh_task(reigh_url, broke.project_id, "wan_2_2_t2i", image_row("no credits"))

    proc = run_edge_worker(edge, SERVICE_KEY, tmp_path / "out", "--worker", "cloud-1")
    assert proc.returncode == 0, proc.stderr[-3000:]

    for task_id in (image, second):
        row = task(reigh_url, task_id)
        assert row["status"] == "Complete", (row["error_message"], proc.stderr[-3000:])
        assert row["worker_id"] == "cloud-1" and row["generation_processed_at"] is not None
        url = row["output_location"]
        assert url.startswith(f"{edge.base_url}/storage/v1/object/public/image_uploads/{paying.id}/tasks/{task_id}/")
        assert url.endswith(".png")
        stored = tmp_path / "storage" / "image_uploads" / url.split("/image_uploads/", 1)[1]
        assert stored.stat().st_size > 0
        generations = rows(reigh_url, "SELECT * FROM generations WHERE tasks @> %s::jsonb", json.dumps([str(task_id)]))
        assert len(generations) == 1 and generations[0]["location"] == url
        assert generations[0]["type"] == "image"
        assert row["generation_created"] is True
    # the worker's local copies went with the upload (no --keep-local)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.suffix in (".png", ".jpg")]
    # Reigh's claim gave neither the API-run row nor the row of a user without credits
    for task_id in (api_row, unpaid):
        row = task(reigh_url, task_id)
        assert row["status"] == "Queued" and row["worker_id"] is None and row["generation_started_at"] is None
    # billed per second by complete_task (service role), one spend per completed row
    spends = rows(reigh_url, "SELECT task_id FROM credits_ledger WHERE type = 'spend' AND user_id = %s", paying.id)
    assert sorted(str(r["task_id"]) for r in spends) == sorted([str(image), str(second)])
    assert float(rows(reigh_url, "SELECT credits FROM users WHERE id = %s", paying.id)[0]["credits"]) < 100
    # the worker told Reigh its resident model (update-worker-model) and beat (func_worker_heartbeat_with_logs)
    worker = rows(reigh_url, "SELECT * FROM workers WHERE id = 'cloud-1'")[0]
    assert worker["current_model"] == "tiny_t2v_2_2" and worker["status"] == "terminated"
    called = {name for name, _ in edge.calls}
    assert {"claim-next-task", "complete_task", "get-task-status", "update-worker-model"} <= called
    claims = [body for name, body in edge.calls if name == "claim-next-task"]
    assert claims[0] == {"worker_id": "cloud-1", "run_type": "gpu", "same_model_only": True,
                         "max_task_wait_minutes": 5}


def test_pat_worker_serves_only_its_user_and_gives_back_rows_it_cannot_run(edge, reigh_url, tmp_path):
    me, other, broke = add_reigh_user(reigh_url), add_reigh_user(reigh_url), add_reigh_user(reigh_url, credits=0)
    mine = insert_reigh_task(reigh_url, me.project_id, "wan_2_2_t2i", image_row("my own gpu"))
    # Reigh's PAT claim takes every run type (claim-next-task: "PAT users run on their own hardware"): the worker
    # hands back a row of a type it has no handler for (Reigh's animate_character) instead of failing it
    api_row = insert_reigh_task(reigh_url, me.project_id, "animate_character", {"video_url": "https://x/y.mp4"})
    theirs = insert_reigh_task(reigh_url, other.project_id, "wan_2_2_t2i", image_row("someone else's"))
    unpaid = insert_reigh_task(reigh_url, broke.project_id, "wan_2_2_t2i", image_row("no credits"))

    proc = run_edge_worker(edge, me.token, tmp_path / "out", "--worker", "my-box")
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = task(reigh_url, mine)
    assert row["status"] == "Complete", (row["error_message"], proc.stderr[-3000:])
    assert row["output_location"].startswith(f"{edge.base_url}/storage/v1/object/public/image_uploads/{me.id}/")
    assert len(rows(reigh_url, "SELECT 1 FROM generations WHERE tasks @> %s::jsonb", json.dumps([str(mine)]))) == 1
    handed_back = task(reigh_url, api_row)
    assert handed_back["status"] == "Queued" and handed_back["generation_started_at"] is None
    assert "task_handed_back" in proc.stderr
    for task_id in (theirs, unpaid):
        assert task(reigh_url, task_id)["status"] == "Queued"
    # a user's own GPU is not billed (complete_task bills under the service role only)
    assert rows(reigh_url, "SELECT 1 FROM credits_ledger WHERE type = 'spend'") == []


def test_unknown_token_stops_the_worker_with_a_clear_message(edge, tmp_path):
    proc = run_edge_worker(edge, "not-a-token", tmp_path / "out", timeout=60)
    assert proc.returncode == 1
    assert "refused the key" in proc.stderr and "--reigh-access-token" in proc.stderr


def travel_row(image_urls: list[str], run_id: str, shot_id: str, parent_generation_id: str,
               model: tuple[str, str] = ("tiny_vace", "vace")) -> dict[str, Any]:
    """resolvers/travelBetweenImages.ts for a batch travel from a shot: the orchestrator payload, spread and
    nested again by composeTaskFamilyPayload with its orchestration, task-view and family contracts, and the
    shot's parent generation (ensure_shot_parent_generation) at the top level. Reigh's own
    orchestrator_task_id is a made-up name (generateTaskId), not the row's id. ``model``: (model_name,
    model_type), VACE by default; Reigh's own default is its Wan 2.2 i2v Lightning model."""
    model_name, model_type = model
    segments = len(image_urls) - 1
    fake_id = f"sm_travel_orchestrator_{run_id[2:10]}_{secrets.token_hex(3)}"
    payload = {
        "generation_source": "batch", "orchestrator_task_id": fake_id, "run_id": run_id,
        "input_image_paths_resolved": image_urls, "num_new_segments_to_generate": segments,
        "base_prompts_expanded": [f"a journey, part {i}" for i in range(segments)], "base_prompt": "a journey",
        "negative_prompts_expanded": [""] * segments, "segment_frames_expanded": [9] * segments,
        "frame_overlap_expanded": [4] * segments, "parsed_resolution_wh": "32x32", "model_name": model_name,
        "model_type": model_type, "seed_base": 11, "steps": 2, "after_first_post_generation_saturation": 1,
        "after_first_post_generation_brightness": 0, "debug_mode_enabled": False, "enhance_prompt": False,
        "show_input_images": True, "generation_mode": "batch", "dimension_source": "project",
        "amount_of_motion": 0.5, "advanced_mode": False, "independent_segments": True, "shot_id": shot_id,
        "parent_generation_id": parent_generation_id,
    }
    details = {
        **payload, "contract_version": 1, "task_family": "travel_between_images", "orchestrator_details": payload,
        "orchestration_contract": {"contract_version": 3, "task_family": "travel_between_images",
                                   "orchestrator_task_id": fake_id, "run_id": run_id,
                                   "parent_generation_id": parent_generation_id, "shot_id": shot_id,
                                   "generation_routing": "orchestrator", "sibling_lookup": "run_id"},
        "task_view_contract": {"contract_version": 1, "input_images": image_urls, "prompt": "a journey",
                               "model_name": model_name, "resolution": "32x32"},
        "family_contract": {"contract_version": 1, "segment_regen_mode": "segment_regen_from_order",
                            "image_count": len(image_urls), "segment_count": segments, "has_pair_ids": False},
    }
    return {"tool_type": "travel-between-images", "orchestrator_details": details,
            "parent_generation_id": parent_generation_id}


def shot_with_parent_generation(url: str, project_id: UUID) -> tuple[str, str]:
    """A shot and the parent generation Reigh's ensure_shot_parent_generation gives it before a travel."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT set_config('request.jwt.claims', '{\"role\": \"service_role\"}', false)")
        shot = conn.execute("INSERT INTO shots (name, project_id) VALUES ('shot', %s) RETURNING id",
                            (project_id,)).fetchone()[0]
        parent = conn.execute("INSERT INTO generations (project_id, type, params) VALUES (%s, 'video', '{}') "
                              "RETURNING id", (project_id,)).fetchone()[0]
        conn.execute("INSERT INTO shot_generations (shot_id, generation_id) VALUES (%s, %s)", (shot, parent))
    return str(shot), str(parent)


def test_travel_on_vace_through_edge_functions(edge, reigh_url, tmp_path, keyframes):  # noqa: F811
    user = add_reigh_user(reigh_url)
    # the keyframes as Reigh has them: uploads in its Storage, named by their public URLs
    urls = [edge.store_object(f"{user.id}/uploads/{Path(p).name}", Path(p).read_bytes()) for p in keyframes]
    shot, parent_generation = shot_with_parent_generation(reigh_url, user.project_id)
    orchestrator = insert_reigh_task(reigh_url, user.project_id, "travel_orchestrator",
                                     travel_row(urls, "20261207232800123", shot, parent_generation))

    proc = run_edge_worker(edge, SERVICE_KEY, tmp_path / "out", "--worker", "cloud-travel", timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent = task(reigh_url, orchestrator)
    children = rows(reigh_url, "SELECT * FROM tasks WHERE params->>'orchestrator_task_id_ref' = %s ORDER BY "
                               "created_at", str(orchestrator))
    assert parent["status"] == "Complete", (parent["error_message"], [(c["task_type"], c["status"],
                                            c["error_message"]) for c in children], proc.stderr[-3000:])
    assert [c["task_type"] for c in children] == ["travel_segment", "travel_segment", "travel_stitch"]
    assert all(c["status"] == "Complete" for c in children)
    # children were made by Reigh's create-task, chained by dependant_on arrays inside the orchestrator's project
    assert children[1]["dependant_on"] == [children[0]["id"]] and children[2]["dependant_on"] == [children[1]["id"]]
    assert {c["project_id"] for c in children} == {user.project_id}
    # complete_task of the stitch completed the orchestrator with the stitch's Storage URL
    assert parent["output_location"] == children[2]["output_location"]
    assert parent["output_location"].startswith(f"{edge.base_url}/storage/v1/object/public/image_uploads/")
    # Reigh's shot timeline: each segment a child generation of the shot's parent generation (child_order =
    # segment_index), the stitch the parent's new primary variant; nothing for the orchestrator itself
    made = rows(reigh_url, "SELECT tasks->>0 AS task_id, location, type, thumbnail_url, parent_generation_id, "
                           "child_order FROM generations WHERE is_child ORDER BY child_order")
    assert [(r["task_id"], r["location"], str(r["parent_generation_id"]), r["child_order"]) for r in made] == [
        (str(c["id"]), c["output_location"], parent_generation, i) for i, c in enumerate(children[:2])]
    assert all(r["type"] == "video" and r["location"].endswith(".mp4") for r in made)
    # a generated segment goes with its first frame (first_frame_data), which Reigh stores as the thumbnail
    assert all(r["thumbnail_url"] and "/thumbnails/" in r["thumbnail_url"] for r in made)
    shot_parent = rows(reigh_url, "SELECT g.location, v.variant_type FROM generations g JOIN generation_variants v "
                                  "ON v.id = g.primary_variant_id WHERE g.id = %s", parent_generation)[0]
    assert shot_parent == {"location": children[2]["output_location"], "variant_type": "travel_stitch"}
    assert len(rows(reigh_url, "SELECT 1 FROM generations")) == 3  # the parent and the two segments


def test_cancel_in_reigh_stops_the_running_generation(edge, reigh_url, tmp_path):
    user = add_reigh_user(reigh_url)
    long_row = {**t2v_row("a very long generation"), "num_inference_steps": 3000}
    task_id = insert_reigh_task(reigh_url, user.project_id, "t2v", long_row)
    # --lease-seconds sets the beat: each beat asks get-task-status whether the row is still In Progress
    command = [sys.executable, str(WORKER), "--supabase-url", edge.base_url, "--reigh-access-token", user.token,
               "--main-output-dir", str(tmp_path / "out"), "--log-format", "json", "--once", "--lease-seconds", "2"]
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=_worker_env(None), stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_for(lambda: '"model_loaded"' in log_path.read_text() or proc.poll() is not None, timeout=120, interval=0.2)
        assert task(reigh_url, task_id)["status"] == "In Progress", log_path.read_text()[-3000:]
        # once denoising runs, Reigh's billing clock restarts (reigh-worker: a user is not billed for the load)
        reset = ("update-task-status", {"task_id": str(task_id), "status": "In Progress",
                                        "reset_generation_started_at": True})
        wait_for(lambda: reset in edge.calls, timeout=30, interval=0.1)
        # Reigh's web app cancels through update-task-status with the user's own credentials
        answer = httpx.post(f"{edge.base_url}/functions/v1/update-task-status",
                            json={"task_id": str(task_id), "status": "Cancelled"},
                            headers={"Authorization": f"Bearer {user.token}"})
        assert answer.status_code == 200, answer.text
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log_path.read_text()
    assert '"task_cancelled"' in text, text[-3000:]
    row = task(reigh_url, task_id)
    assert row["status"] == "Cancelled" and row["output_location"] is None
    assert rows(reigh_url, "SELECT 1 FROM generations") == []


def test_idle_pat_worker_gives_the_gpu_back_as_reigh_worker_does(edge, reigh_url, tmp_path):
    user = add_reigh_user(reigh_url)
    command = [sys.executable, str(WORKER), "--supabase-url", edge.base_url, "--reigh-access-token", user.token,
               "--main-output-dir", str(tmp_path / "out"), "--log-format", "json", "--poll-interval", "0.2",
               "--idle-release-minutes", "0.02", "--idle-onboarding-grace-seconds", "0"]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=_worker_env(None))
    assert proc.returncode == 75, proc.stderr[-2000:]  # reigh-worker's IDLE_RELEASE_EXIT_CODE
    assert '"worker_idle_release"' in proc.stderr
