"""Rows in the exact shapes the older Headless-Wan2GP worker's producers wrote, for every task type it knew
(direct generation, orchestrators, their children, utilities), run by a real worker on tiny models.

Each row ends Complete with a real output file, or Failed with a message that names the parameter and says
what to send instead. Model names are the tiny definitions (``tiny_t2v`` for ``t2v``, ...): the shapes are
the older worker's, the weights are ours. Field names come from its headless.py, sm_functions/*.py,
specialized_handlers.py and db_operations.py (commit before "Rename headless.py to worker.py").
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from source.db.models import NewTask, TaskStatus
from source.media.write import write_video
from tests.compat.test_legacy_switches import T2V
from tests.helpers import run_worker
from tests.orchestrators.conftest import SIZE, run_in_process
from tests.orchestrators.test_older_children import older_travel_payload, queue_older_travel

RES = f"{SIZE}x{SIZE}"


def older_rows(images: list[str], guide: str) -> dict[str, tuple[str, dict[str, Any], str | None]]:
    """name → (task_type, params as the older producers wrote them, expected error text or None)."""
    travel = older_travel_payload(images)
    return {
        # headless.py's generic generation (process_single_task): "frames", "model", "resolution"
        "wgp": ("wgp", {"prompt": "a red cat", "model": "tiny_t2v", "resolution": RES, "frames": 5, "seed": 7,
                        "steps": 2, "negative_prompt": "blurry", "use_causvid_lora": False}, None),
        "standard_wgp_task": ("standard_wgp_task", {**T2V, "frames": 5}, None),
        "frames not 4n+1": ("wgp", {**T2V, "video_length": 6}, None),  # WanGP rounds: 5 frames
        "single_image": ("single_image", {"prompt": "a lighthouse", "model": "tiny_t2v", "resolution": RES,
                                          "seed": 3, "steps": 2, "negative_prompt": " "}, None),
        "vace": ("vace", {"prompt": "a walk", "model": "tiny_vace", "resolution": RES, "video_length": 5,
                          "steps": 2, "image_refs_paths": [images[0]], "video_guide_path": guide,
                          "video_prompt_type": "VI"}, None),
        "flux": ("flux", {"prompt": "a poster", "model": "tiny_flux", "resolution": RES, "steps": 2}, None),
        # an orchestrator's nested payload, as the older magic_edit and single_image accepted it
        "nested wgp": ("t2v", {"orchestrator_details": {**T2V, "debug_mode_enabled": True}}, None),
        "magic_edit": ("magic_edit", {"orchestrator_details": {"image_url": images[0], "prompt": "from the left",
                                                               "resolution": RES, "seed": 2,
                                                               "model_name": "tiny_flux_kontext"}}, None),
        "magic_edit in_scene": ("magic_edit", {"orchestrator_details": {
            "image_url": images[0], "resolution": RES, "model_name": "tiny_flux_kontext", "in_scene": True}},
            "params.in_scene is true but"),
        "travel_orchestrator": ("travel_orchestrator", {"orchestrator_details": {
            **copy.deepcopy(travel), "run_id": "compat-travel"}}, None),
        "different_perspective_orchestrator": ("different_perspective_orchestrator", {
            "input_image_path": images[0], "prompt": "seen from the left", "model_name": "tiny_vace",
            "resolution": RES, "seed": 3, "perspective_type": "depth", "use_causvid_lora": False,
            "t2i_model_name": "tiny_t2v", "depth_model": "tiny_depth_anything"}, None),  # output_video_frames: 16
        "generate_depth": ("generate_depth", {"input_image_path": images[1], "output_dir": "outputs/depth",
                                              "model": "tiny_depth_anything"}, None),
        "rife_interpolate_images": ("rife_interpolate_images", {
            "input_image_path1": images[0], "input_image_path2": images[1], "output_path": "outputs/rife/b.mp4",
            "frames": 5, "resolution": RES, "method": "flow"}, None),
        "upscale stitch": ("travel_stitch", {"orchestrator_task_id_ref": "gone", "orchestrator_run_id": "x",
                                             "num_total_segments_generated": 1, "upscale_factor": 8.0,
                                             "full_orchestrator_payload": travel},
                           "params.upscale_factor: Input should be less than or equal to 4"),
        "unknown type": ("my_custom_gen", {**T2V}, "unknown task type 'my_custom_gen'"),
        "ping": ("ping", {}, None),
    }


def _guide(tmp_path: Path) -> str:
    return str(write_video(np.random.default_rng(2).random((5, SIZE, SIZE, 3)), tmp_path / "guide.mp4", 16))


def _check(store, ids: dict[str, str], rows: dict[str, tuple[str, dict, str | None]], out: Path) -> None:
    for name, (_, _, error) in rows.items():
        row = store.get_task(ids[name])
        if error is None:
            assert row.status is TaskStatus.COMPLETE, (name, row.error_message)
            if row.output_location and name != "ping":
                assert Path(row.output_location).is_file(), (name, row.output_location)
        else:
            assert row.status is TaskStatus.FAILED and error in row.error_message, (name, row.error_message)


def test_every_older_row_shape_completes_or_fails_naming_what_to_send(sqlite_store, tmp_path, keyframes):
    rows = older_rows(keyframes, _guide(tmp_path))
    ids = {name: sqlite_store.add_task(NewTask(task_type, params)) for name, (task_type, params, _) in rows.items()}
    video = ids["wgp"]
    ids["extract_frame"] = sqlite_store.add_task(NewTask("extract_frame", {
        "input_video_task_id": video, "frame_index": 0, "output_dir": "outputs/frames"}, dependant_on=video))
    rows["extract_frame"] = ("extract_frame", {}, None)
    _, segments, stitch = queue_older_travel(sqlite_store, keyframes)  # older children in the same queue
    out = tmp_path / "outputs"
    run_in_process(sqlite_store, out)
    _check(sqlite_store, ids, rows, out)
    # the older shapes' particulars
    assert sqlite_store.get_task(ids["frames not 4n+1"]).result["adjusted"]["video_length"] == {
        "requested": 6, "used": 5}
    assert Path(sqlite_store.get_task(ids["single_image"]).output_location).suffix == ".png"
    assert sqlite_store.get_task(ids["nested wgp"]).result["ignored_params"] == ["orchestrator_details.debug_mode_enabled"]
    dp = sqlite_store.get_task(ids["different_perspective_orchestrator"])
    assert dp.result["adjusted"] == {"output_video_frames": {"requested": 16, "used": 17}}
    assert Path(sqlite_store.get_task(ids["generate_depth"]).output_location).parent == out.resolve() / "depth"
    assert sqlite_store.get_task(ids["rife_interpolate_images"]).output_location == str(out.resolve() / "rife/b.mp4")
    assert all(sqlite_store.get_task(t).status is TaskStatus.COMPLETE for t in [*segments, stitch])


SUBSET = ("wgp", "nested wgp", "magic_edit in_scene", "upscale stitch", "unknown type")


@pytest.mark.postgres
def test_older_rows_through_a_worker_process_on_postgres(postgres_store, postgres_schema_url, tmp_path, keyframes):
    rows = {name: spec for name, spec in older_rows(keyframes, _guide(tmp_path)).items() if name in SUBSET}
    ids = {name: postgres_store.add_task(NewTask(task_type, params)) for name, (task_type, params, _) in rows.items()}
    _, segments, stitch = queue_older_travel(postgres_store, keyframes[:2], orchestrator_row=False)
    out = tmp_path / "outputs"
    done = run_worker(postgres_schema_url, out, "--once", "--input-roots", str(tmp_path), timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    _check(postgres_store, ids, rows, out)
    for task in [*segments, stitch]:
        row = postgres_store.get_task(task)
        assert row.status is TaskStatus.COMPLETE, row.error_message
