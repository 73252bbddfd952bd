"""different_perspective_orchestrator → generate_openpose/depth → t2v → extract_frame → … → dp_final_gen."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest

from source.db.models import NewTask, TaskStatus
from source.generation.conversion import ALIASES, CONVERSION_KEYS, ENGINE_KEYS, db_task_to_generation_task
from source.media.write import write_video
from tests.orchestrators.conftest import run_in_process

CHAIN = ["input_perspective", "view", "view_frame", "view_perspective", "final"]


def dp_params(image: str, **overrides):
    return {"input_image_path": image, "prompt": "the same person seen from the left", "model_name": "tiny_vace",
            "t2i_model_name": "tiny_t2v", "resolution": "32x32", "seed": 3, "perspective_type": "pose",
            "output_video_frames": 5, "fps_helpers": 16, **overrides}


def _children(store, parent_id):
    return {row.child_key: row for row in store.list_child_tasks(parent_id)}


def test_orchestrator_creates_the_chain_with_payloads_the_handlers_read(sqlite_store, tmp_path, keyframes):
    parent = sqlite_store.add_task(NewTask("different_perspective_orchestrator", dp_params(keyframes[0])))
    run_in_process(sqlite_store, tmp_path / "out", max_tasks=1)
    assert sqlite_store.get_task(parent).awaiting_children
    children = _children(sqlite_store, parent)
    assert sorted(children) == sorted(CHAIN)
    assert [children[k].task_type for k in CHAIN] == [
        "generate_openpose", "t2v", "extract_frame", "generate_openpose", "dp_final_gen"]
    for before, after in zip(CHAIN, CHAIN[1:], strict=False):
        assert children[after].dependant_on == children[before].id
    view = children["view"].params()
    assert set(view) <= ENGINE_KEYS | CONVERSION_KEYS | set(ALIASES)  # nothing the conversion layer drops
    assert db_task_to_generation_task("x", "t2v", view).parameters["video_length"] == 5
    assert children["view_frame"].params() == {"input_video_task_id": children["view"].id, "frame_index": 0}
    assert children["view_perspective"].params() == {"input_image_task_id": children["view_frame"].id}
    final = children["final"].params()
    assert final["input_perspective_task_id"] == children["input_perspective"].id
    assert final["view_perspective_task_id"] == children["view_perspective"].id


def test_dp_final_gen_morphs_the_two_maps_and_completes_the_orchestrator(sqlite_store, tmp_path, keyframes):
    """The four steps before dp_final_gen are completed by a stand-in worker with files of the right kind,
    so the final step is checked here whatever utility handlers this checkout has."""
    parent = sqlite_store.add_task(NewTask("different_perspective_orchestrator",
                                           dp_params(keyframes[0], perspective_type="depth")))
    run_in_process(sqlite_store, tmp_path / "out", max_tasks=1)
    view = write_video(np.random.default_rng(0).random((5, 32, 32, 3)), tmp_path / "view.mp4", 16)
    outputs = {"input_perspective": keyframes[1], "view": str(view), "view_frame": keyframes[0],
               "view_perspective": keyframes[2]}
    for _ in range(4):
        row = sqlite_store.claim_next_task("stand-in", lease_seconds=30)
        assert sqlite_store.complete_task(row.id, "stand-in", output_location=outputs[row.child_key], result={})
    # the guide is scratch (_work/<task>), kept only as with --debug: this test reads it afterwards
    run_in_process(sqlite_store, tmp_path / "out", keep_work_dirs=True)
    children = _children(sqlite_store, parent)
    final = children["final"]
    assert final.status is TaskStatus.COMPLETE, final.error_message
    done = sqlite_store.get_task(parent)
    assert done.status is TaskStatus.COMPLETE and done.output_location == final.output_location
    assert cv2.imread(done.output_location).shape == (32, 32, 3)
    guide = final.result["guide_video"]
    from source.media.video import read_image, read_video

    frames = read_video(guide, "guide").astype(np.float32)
    start, end = (read_image(p, "map", (32, 32)).astype(np.float32) for p in (keyframes[1], keyframes[2]))
    assert len(frames) == 5
    def err(a, b):
        return np.abs(a - b).mean()

    # H.264 (4:2:0) blurs these noisy maps a little; each frame is still far closer to its target
    assert err(frames[0], start) < 0.25 * err(frames[0], end)
    assert err(frames[-1], end) < 0.25 * err(frames[-1], start)
    mid = (start + end) / 2
    assert err(frames[2], mid) < 0.5 * min(err(frames[2], start), err(frames[2], end))


def test_different_perspective_depth_end_to_end_on_tiny_models(sqlite_store, tmp_path, keyframes):
    parent = sqlite_store.add_task(NewTask("different_perspective_orchestrator", dp_params(
        keyframes[0], perspective_type="depth", depth_model="tiny_depth_anything")))
    run_in_process(sqlite_store, tmp_path / "out")
    children = _children(sqlite_store, parent)
    assert {k: r.status for k, r in children.items()} == {k: TaskStatus.COMPLETE for k in CHAIN}, {
        k: r.error_message for k, r in children.items()}
    assert children["view_perspective"].result["model"] == "tiny_depth_anything"
    done = sqlite_store.get_task(parent)
    assert done.status is TaskStatus.COMPLETE and done.output_location == children["final"].output_location
    assert cv2.imread(done.output_location) is not None
    # the guide was scratch, deleted with the task's work folder: the row does not point at it
    assert "guide_video" not in children["final"].result


def test_different_perspective_pose_runs_real_detection_and_fails_on_a_view_without_a_person(
        sqlite_store, tmp_path):
    """The pose chain with real mediapipe detection: the portrait's pose is found; the tiny random model's
    view has nobody in it, so the chain stops there with that cause and nothing is left Queued."""
    portrait = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    parent = sqlite_store.add_task(NewTask("different_perspective_orchestrator", dp_params(str(portrait))))
    # The portrait lives in matplotlib's folder; generated views in pytest's temp folders (the process-wide
    # generation queue keeps the output root of the first test that started it).
    run_in_process(sqlite_store, tmp_path / "out", input_roots=(portrait.parent, Path(tempfile.gettempdir())))
    children = _children(sqlite_store, parent)
    statuses = {k: r.status for k, r in children.items()}
    assert statuses["input_perspective"] is TaskStatus.COMPLETE, children["input_perspective"].error_message
    assert statuses["view"] is TaskStatus.COMPLETE and statuses["view_frame"] is TaskStatus.COMPLETE
    assert statuses["view_perspective"] is TaskStatus.FAILED
    assert "no person detected" in children["view_perspective"].error_message
    assert statuses["final"] in (TaskStatus.FAILED, TaskStatus.CANCELLED)
    done = sqlite_store.get_task(parent)
    assert done.status is TaskStatus.FAILED
    assert children["view_perspective"].id in done.error_message and "no person detected" in done.error_message


@pytest.mark.parametrize(("override", "message"), [
    ({"perspective_type": "normal"}, "params.perspective_type: Input should be 'pose' or 'depth'"),
    ({"model_name": "tiny_t2v"}, "params.model_name 'tiny_t2v' is a wan_t2v model"),
    ({"t2i_model_name": "tiny_vace"}, "params.t2i_model_name 'tiny_vace' is a wan_vace model"),
    ({"output_video_frames": 0}, "params.output_video_frames is 0; send a frame count of at least 5"),
    ({"input_image_path": "/no/input.png"}, "params.input_image_path: file not found: /no/input.png"),
    ({"prompt": ""}, "params.prompt: String should have at least 1 character"),
])
def test_bad_different_perspective_params_fail_before_any_child(sqlite_store, tmp_path, keyframes, override, message):
    parent = sqlite_store.add_task(NewTask("different_perspective_orchestrator", dp_params(keyframes[0], **override)))
    run_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(parent)
    assert row.status is TaskStatus.FAILED and message in row.error_message, row.error_message
    assert sqlite_store.list_child_tasks(parent) == []


def test_the_older_default_of_16_frames_is_rounded_to_17_and_recorded(sqlite_store, tmp_path, keyframes):
    params = dp_params(keyframes[0])
    del params["output_video_frames"]
    parent = sqlite_store.add_task(NewTask("different_perspective_orchestrator", params))
    run_in_process(sqlite_store, tmp_path / "out", max_tasks=1)
    row = sqlite_store.get_task(parent)
    assert row.awaiting_children, row.error_message
    assert row.result["adjusted"] == {"output_video_frames": {"requested": 16, "used": 17}}
    assert _children(sqlite_store, parent)["final"].params()["output_video_frames"] == 17
