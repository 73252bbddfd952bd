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

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.helpers import REPO_ROOT, WORKER, _worker_env
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
    video = insert_reigh_task(reigh_url, paying.project_id, "t2v", t2v_row("a cat"))
    api_row = insert_reigh_task(reigh_url, paying.project_id, "qwen_image", {"prompt": "an api image"})
    unpaid = insert_reigh_task(reigh_url, broke.project_id, "wan_2_2_t2i", image_row("no credits"))

    proc = run_edge_worker(edge, SERVICE_KEY, tmp_path / "out", "--worker", "cloud-1")
    assert proc.returncode == 0, proc.stderr[-3000:]

    for task_id, suffix in ((image, ".png"), (video, ".mp4")):
        row = task(reigh_url, task_id)
        assert row["status"] == "Complete", (row["error_message"], proc.stderr[-3000:])
        assert row["worker_id"] == "cloud-1" and row["generation_processed_at"] is not None
        url = row["output_location"]
        assert url.startswith(f"{edge.base_url}/storage/v1/object/public/image_uploads/{paying.id}/tasks/{task_id}/")
        assert url.endswith(suffix)
        stored = tmp_path / "storage" / "image_uploads" / url.split("/image_uploads/", 1)[1]
        assert stored.stat().st_size > 0
        generations = rows(reigh_url, "SELECT * FROM generations WHERE tasks @> %s::jsonb", json.dumps([str(task_id)]))
        assert len(generations) == 1 and generations[0]["location"] == url
        assert generations[0]["type"] == ("video" if suffix == ".mp4" else "image")
        assert row["generation_created"] is True
    # the worker's local copies went with the upload (no --keep-local)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.suffix in (".png", ".mp4")]
    # Reigh's claim gave neither the API-run row nor the row of a user without credits
    for task_id in (api_row, unpaid):
        row = task(reigh_url, task_id)
        assert row["status"] == "Queued" and row["worker_id"] is None and row["generation_started_at"] is None
    # billed per second by complete_task (service role), one spend per completed row
    spends = rows(reigh_url, "SELECT task_id FROM credits_ledger WHERE type = 'spend' AND user_id = %s", paying.id)
    assert sorted(str(r["task_id"]) for r in spends) == sorted([str(image), str(video)])
    assert float(rows(reigh_url, "SELECT credits FROM users WHERE id = %s", paying.id)[0]["credits"]) < 100
    # the worker told Reigh its resident model (update-worker-model) and beat (func_worker_heartbeat_with_logs)
    worker = rows(reigh_url, "SELECT * FROM workers WHERE id = 'cloud-1'")[0]
    assert worker["current_model"] in ("tiny_t2v", "tiny_t2v_2_2") and worker["status"] == "terminated"
    called = {name for name, _ in edge.calls}
    assert {"claim-next-task", "complete_task", "get-task-status", "update-worker-model"} <= called
    claims = [body for name, body in edge.calls if name == "claim-next-task"]
    assert claims[0] == {"worker_id": "cloud-1", "run_type": "gpu", "same_model_only": True,
                         "max_task_wait_minutes": 5}
