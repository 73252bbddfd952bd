"""Real ``worker.py --db-url`` processes on a Reigh database after ``--migrate-only`` (direct mode, as a
guest): they claim and complete the rows of the task types this worker runs with tiny models, leave Reigh's
API-run rows and a 0-credit user's rows Queued, and leave a generations row for each output and a bill."""

from __future__ import annotations

import signal
from pathlib import Path

import cv2
import psycopg
import pytest

from source.media.video import read_video
from tests.generation.tiny_lora import make_tiny_wan_lora
from tests.helpers import run_worker, start_worker, wait_for
from tests.orchestrators.conftest import keyframes  # noqa: F401  (fixture)
from tests.reigh.conftest import add_reigh_user, insert_reigh_task
from tests.reigh.test_edge_mode import image_row, shot_with_parent_generation, t2v_row, travel_row

pytestmark = pytest.mark.postgres


def _migrated(url: str, out: Path) -> None:
    done = run_worker(url, out, "--migrate-only")
    assert done.returncode == 0, done.stderr


def _rows(url: str) -> dict[str, tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {str(row[0]): row[1:] for row in conn.execute(
            "SELECT id, status::text, output_location, error_message, worker_id FROM tasks")}


def _generation_locations(url: str) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {row[0][0]: row[1] for row in conn.execute("SELECT tasks, location FROM generations")}


@pytest.mark.slow
def test_worker_serves_reigh_rows_it_runs_and_leaves_the_rest_queued(reigh_url, tmp_path):
    out = tmp_path / "out"
    _migrated(reigh_url, out)
    user, broke = add_reigh_user(reigh_url, credits=5), add_reigh_user(reigh_url, credits=0)
    # rows as Reigh's create-task resolvers build them (the builders of the edge-mode tests)
    image = insert_reigh_task(reigh_url, user.project_id, "wan_2_2_t2i", image_row("a lighthouse"))
    video = insert_reigh_task(reigh_url, user.project_id, "t2v", t2v_row("waves"))
    api = insert_reigh_task(reigh_url, user.project_id, "qwen_image", {"prompt": "api-run"})
    unserved = insert_reigh_task(reigh_url, broke.project_id, "t2v", {"prompt": "no credits", "model": "tiny_t2v"})

    done = run_worker(reigh_url, out, "--once", "--worker", "guest-1", timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(reigh_url)
    for task_id, suffix in ((image, ".png"), (video, ".mp4")):
        status, location, error, worker = rows[str(task_id)]
        assert (status, worker) == ("Complete", "guest-1"), error
        assert location.endswith(suffix) and Path(location).is_file()
    assert cv2.imread(rows[str(image)][1]) is not None and len(read_video(rows[str(video)][1], "t2v")) == 5
    assert rows[str(api)][0] == "Queued" and rows[str(unserved)][0] == "Queued"
    assert _generation_locations(reigh_url) == {str(image): rows[str(image)][1], str(video): rows[str(video)][1]}
    with psycopg.connect(reigh_url, autocommit=True) as conn:
        billed = {str(r[0]) for r in conn.execute("SELECT task_id FROM credits_ledger WHERE type = 'spend'")}
        worker_row = conn.execute("SELECT instance_type, status FROM workers WHERE id = 'guest-1'").fetchone()
    assert billed == {str(image), str(video)}
    assert worker_row == ("wangp", "inactive")  # registered in Reigh's workers table, marked gone on exit


# Reigh's default travel runs on its Wan 2.2 i2v Lightning model (each segment from its start to its end image);
# VACE travel makes 9 + 9 - 4 frames from two 9-frame segments overlapping by 4.
@pytest.mark.slow
@pytest.mark.parametrize("model", [("tiny_vace", "vace"), ("tiny_wan_2_2_i2v_lightning", "i2v")], ids=["vace", "i2v"])
def test_travel_completes_through_a_guest_worker(reigh_url, tmp_path, keyframes, model, monkeypatch):  # noqa: F811
    out = tmp_path / "out"
    if model[1] == "i2v":  # the tiny Lightning definition's own phase LoRAs, in the worker's LoRA folder
        loras = tmp_path / "loras"
        for name, seed in (("tiny_lightning_i2v_high", 11), ("tiny_lightning_i2v_low", 12)):
            make_tiny_wan_lora(loras / "wan", name, kind="wan_i2v_2_2", seed=seed)
        monkeypatch.setenv("WGP_LORA_DIR", str(loras))
    _migrated(reigh_url, out)
    user = add_reigh_user(reigh_url, credits=5)
    # the row Reigh's travel-between-images resolver builds for a shot, its keyframes local files here
    shot, parent_generation = shot_with_parent_generation(reigh_url, user.project_id)
    orchestrator = insert_reigh_task(reigh_url, user.project_id, "travel_orchestrator",
                                     travel_row(keyframes, "20261207235900123", shot, parent_generation, model))
    worker = start_worker(reigh_url, out, "--worker", "guest-travel", "--lease-seconds", "10", "--poll-interval", "1",
                          "--input-roots", str(tmp_path), log_path=tmp_path / "worker.log")
    try:
        wait_for(lambda: _rows(reigh_url)[str(orchestrator)][0] in ("Complete", "Failed"), timeout=240, interval=0.5)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    rows = _rows(reigh_url)
    status, final, error, _ = rows[str(orchestrator)]
    assert status == "Complete", (error, (tmp_path / "worker.log").read_text()[-3000:])
    if model[1] == "vace":
        assert len(read_video(final, "final")) == 9 + 9 - 4
    else:  # two i2v segments of 9 frames, stitched over their overlap
        assert 9 < len(read_video(final, "final")) <= 9 + 9
    with psycopg.connect(reigh_url, autocommit=True) as conn:
        children = conn.execute("SELECT id::text, task_type, status::text, project_id, "
                                "params->>'orchestrator_task_id_ref', output_location FROM tasks WHERE id <> %s "
                                # one transaction made them all (one created_at): their order is the segment's
                                "ORDER BY task_type, (params->>'segment_index')::int", (orchestrator,)).fetchall()
        segments = conn.execute("SELECT tasks->>0, location, parent_generation_id::text, child_order FROM generations "
                                "WHERE is_child ORDER BY child_order").fetchall()
        shot_parent = conn.execute("SELECT g.location, v.variant_type FROM generations g JOIN generation_variants v "
                                   "ON v.id = g.primary_variant_id WHERE g.id = %s", (parent_generation,)).fetchone()
        generation_count = conn.execute("SELECT count(*) FROM generations").fetchone()[0]
        billed = conn.execute("SELECT task_id FROM credits_ledger WHERE type = 'spend'").fetchall()
    assert [c[1] for c in children] == ["travel_segment", "travel_segment", "travel_stitch"]
    assert all(c[2:5] == ("Complete", user.project_id, str(orchestrator)) for c in children)
    assert final == children[-1][5]
    # complete-task's routing for a travel from a shot (the same the edge-mode test sees): each segment a child
    # generation of the shot's parent generation, the stitch its new primary variant, none for the orchestrator
    assert segments == [(c[0], c[5], parent_generation, i) for i, c in enumerate(children[:2])]
    assert shot_parent == (final, "travel_stitch") and generation_count == 3
    assert billed == [(orchestrator,)]


@pytest.mark.slow
def test_a_killed_guest_workers_row_is_reclaimed_after_its_lease_and_completed_by_another(reigh_url, tmp_path):
    out = tmp_path / "out"
    _migrated(reigh_url, out)
    user = add_reigh_user(reigh_url, credits=5)
    # many steps: the first worker is still generating when it is killed
    row = insert_reigh_task(reigh_url, user.project_id, "t2v", {**t2v_row("slow waves"), "num_inference_steps": 400})
    args = ("--lease-seconds", "3", "--poll-interval", "1")
    first = start_worker(reigh_url, out, "--worker", "doomed", *args, log_path=tmp_path / "doomed.log")
    try:
        wait_for(lambda: _rows(reigh_url)[str(row)][0] == "In Progress", timeout=120, interval=0.2)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert _rows(reigh_url)[str(row)][3] == "doomed"
    with psycopg.connect(reigh_url, autocommit=True) as conn:  # the rest of the run need not take 400 steps
        conn.execute("SELECT set_config('application_name', 'claim_task', false)")
        conn.execute("UPDATE tasks SET params = params || '{\"num_inference_steps\": 2}' WHERE id = %s", (row,))
    second = start_worker(reigh_url, out, "--worker", "survivor", *args, log_path=tmp_path / "survivor.log")
    try:
        wait_for(lambda: _rows(reigh_url)[str(row)][0] in ("Complete", "Failed"), timeout=180, interval=0.5)
    finally:
        second.terminate()
        second.wait(timeout=30)
    status, location, error, worker = _rows(reigh_url)[str(row)]
    assert (status, worker) == ("Complete", "survivor"), (error, (tmp_path / "survivor.log").read_text()[-2000:])
    assert Path(location).is_file() and _generation_locations(reigh_url) == {str(row): location}
