"""Child rows exactly as the older Headless-Wan2GP orchestrators queued them (field names from its
travel_between_images.py and different_perspective.py) run here: translated at the edge, mixed with ours."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import psycopg
import pytest

from source.db.models import NewTask, TaskStatus
from source.db.sqlite import SqliteTaskStore
from source.media.video import read_video
from source.media.write import write_video
from tests.orchestrators.conftest import SIZE, run_in_process

RUN = "run-older"


def older_travel_payload(images: list[str], **overrides: Any) -> dict[str, Any]:
    """The older orchestrator's ``orchestrator_details`` after its own 4n+1 quantisation."""
    payload = {
        "run_id": RUN, "input_image_paths_resolved": images, "num_new_segments_to_generate": len(images) - 1,
        "base_prompts_expanded": ["a journey"] * (len(images) - 1),
        "negative_prompts_expanded": ["blurry"] * (len(images) - 1),
        "segment_frames_expanded": [9] * (len(images) - 1), "frame_overlap_expanded": [4] * (len(images) - 2),
        "parsed_resolution_wh": f"{SIZE}x{SIZE}", "model_name": "tiny_vace", "seed_base": 11, "steps": 2,
        "fps_helpers": 16, "fade_in_params_json_str": None, "fade_out_params_json_str": None,
        "crossfade_sharp_amt": 0.0, "apply_causvid": False, "apply_reward_lora": False, "cfg_star_switch": 0,
        "cfg_zero_step": -1, "debug_mode_enabled": False, "skip_cleanup_enabled": False, "upscale_factor": 0.0,
        "main_output_dir_for_run": "/srv/older/outputs",
    }
    payload.update(overrides)
    return payload


def older_segment(payload: dict[str, Any], orchestrator_id: str, idx: int) -> dict[str, Any]:
    """A travel_segment row's params as the older orchestrator wrote them."""
    count = payload["num_new_segments_to_generate"]
    overlaps = payload["frame_overlap_expanded"]
    return {
        "task_id": f"travel_seg_{RUN}_{idx:02d}_abc", "orchestrator_task_id_ref": orchestrator_id,
        "orchestrator_run_id": RUN, "project_id": None, "segment_index": idx, "is_first_segment": idx == 0,
        "is_last_segment": idx == count - 1, "current_run_base_output_dir": "/srv/older/outputs",
        "base_prompt": payload["base_prompts_expanded"][idx], "negative_prompt": payload["negative_prompts_expanded"][idx],
        "segment_frames_target": payload["segment_frames_expanded"][idx],
        "frame_overlap_from_previous": overlaps[idx - 1] if idx > 0 else 0,
        "frame_overlap_with_next": overlaps[idx] if idx < len(overlaps) else 0,
        "vace_image_refs_to_prepare_by_headless": [], "parsed_resolution_wh": payload["parsed_resolution_wh"],
        "model_name": payload["model_name"], "seed_to_use": payload["seed_base"] + idx, "use_causvid_lora": False,
        "apply_reward_lora": False, "cfg_star_switch": 0, "cfg_zero_step": -1, "params_json_str_override": None,
        "fps_helpers": 16, "fade_in_params_json_str": None, "fade_out_params_json_str": None,
        "subsequent_starting_strength_adjustment": 0.0, "desaturate_subsequent_starting_frames": 0.0,
        "adjust_brightness_subsequent_starting_frames": 0.0, "after_first_post_generation_saturation": None,
        "after_first_post_generation_brightness": None, "segment_image_download_dir": None,
        "debug_mode_enabled": False, "skip_cleanup_enabled": False,
        "continue_from_video_resolved_path_for_guide": None, "full_orchestrator_payload": payload,
    }


def older_stitch(payload: dict[str, Any], orchestrator_id: str) -> dict[str, Any]:
    return {
        "task_id": f"travel_stitch_{RUN}", "orchestrator_task_id_ref": orchestrator_id, "orchestrator_run_id": RUN,
        "project_id": None, "num_total_segments_generated": payload["num_new_segments_to_generate"],
        "current_run_base_output_dir": "/srv/older/outputs",
        "frame_overlap_settings_expanded": payload["frame_overlap_expanded"],
        "crossfade_sharp_amt": payload["crossfade_sharp_amt"], "parsed_resolution_wh": payload["parsed_resolution_wh"],
        "fps_final_video": 16, "upscale_factor": payload["upscale_factor"], "upscale_model_name": None,
        "seed_for_upscale": 5011,
        "debug_mode_enabled": False, "skip_cleanup_enabled": False, "initial_continued_video_path": None,
        "final_stitched_output_path": "/srv/older/outputs/travel_final.mp4",
        "poll_interval_from_orchestrator": 15, "poll_timeout_from_orchestrator": 1800,
        "full_orchestrator_payload": payload,
    }


def older_worker_wrote(store, task_id: str, status: str, output_location: str | None) -> None:
    """What the older worker itself wrote on its orchestrator row once it had queued the children (it kept
    no lease), on any backend."""
    if isinstance(store, SqliteTaskStore):
        with store._write() as conn:
            conn.execute("UPDATE tasks SET status = ?, output_location = ? WHERE id = ?",
                         (status, output_location, task_id))
    else:  # the Supabase API store's own schema, or a direct store's
        with psycopg.connect(getattr(store, "schema_url", None) or store._conninfo, autocommit=True) as conn:
            conn.execute("UPDATE tasks SET status = %s, output_location = %s WHERE id::text = %s",
                         (status, output_location, task_id))


def queue_older_travel(store, images: list[str], *, orchestrator_row: bool = True,
                       orchestrator_status: str = "In Progress", **overrides: Any) -> tuple[str, list[str], str]:
    """An older orchestrator row and its children, chained by dependant_on exactly as the older worker
    inserted them. The older worker left its orchestrator In Progress until the stitch completed it (its
    June 2025 versions marked it Complete at once: ``orchestrator_status="Complete"``)."""
    payload = older_travel_payload(images, **overrides)
    orchestrator = "older-orchestrator-gone"
    if orchestrator_row:
        orchestrator = store.add_task(NewTask("travel_orchestrator", {"orchestrator_details": copy.deepcopy(payload)}))
        older_worker_wrote(store, orchestrator, orchestrator_status, "Orchestration queued")
    segments, previous = [], None
    for idx in range(payload["num_new_segments_to_generate"]):
        previous = store.add_task(NewTask("travel_segment", older_segment(payload, orchestrator, idx),
                                          dependant_on=previous))
        segments.append(previous)
    stitch = store.add_task(NewTask("travel_stitch", older_stitch(payload, orchestrator), dependant_on=previous))
    return orchestrator, segments, stitch


def test_older_travel_segments_and_stitch_run_to_a_final_video(sqlite_store, tmp_path, keyframes):
    _, segments, stitch = queue_older_travel(sqlite_store, keyframes)
    run_in_process(sqlite_store, tmp_path / "out")
    rows = [sqlite_store.get_task(i) for i in [*segments, stitch]]
    assert [r.status for r in rows] == [TaskStatus.COMPLETE] * 3, [r.error_message for r in rows]
    first, second = (rows[i].result for i in (0, 1))
    assert first["older_shape"] and first["seed"] == 11 and second["seed"] == 12  # seed_to_use
    assert first["kept_frames"] == [0, 8] and second["kept_frames"] == [0, 1, 2, 3, 8]  # overlap from segment 0
    # every older key is used or listed: bookkeeping keys and behaviour we do not have alike
    assert {"task_id", "current_run_base_output_dir", "cfg_star_switch", "cfg_zero_step",
            "after_first_post_generation_saturation", "segment_image_download_dir",
            "full_orchestrator_payload.main_output_dir_for_run"} <= set(first["ignored_params"])
    assert "full_orchestrator_payload.cfg_star_switch" in first["ignored_params"]
    assert not {"seed_to_use", "model_name", "parsed_resolution_wh", "segment_index"} & set(first["ignored_params"])
    final = read_video(rows[2].output_location, "final")
    assert len(final) == 9 + 9 - 4 and final.shape[1:3] == (SIZE, SIZE)
    assert rows[2].result["segment_task_ids"] == segments
    assert {"final_stitched_output_path", "poll_timeout_from_orchestrator"} <= set(rows[2].result["ignored_params"])


def test_older_and_current_travels_run_side_by_side_in_one_queue(sqlite_store, tmp_path, keyframes):
    from tests.orchestrators.conftest import travel_params

    current = sqlite_store.add_task(NewTask("travel_orchestrator", travel_params(keyframes[:2], run_id="new")))
    _, _, stitch = queue_older_travel(sqlite_store, keyframes[:2])
    run_in_process(sqlite_store, tmp_path / "out")
    assert sqlite_store.get_task(current).status is TaskStatus.COMPLETE
    old = sqlite_store.get_task(stitch)
    assert old.status is TaskStatus.COMPLETE, old.error_message
    assert Path(old.output_location).is_file()


def test_an_older_segment_length_is_rounded_to_4n_plus_1_and_recorded(sqlite_store, tmp_path, keyframes):
    payload = older_travel_payload(keyframes[:2], segment_frames_expanded=[8])
    row_params = older_segment(payload, "gone-orchestrator", 0)
    task = sqlite_store.add_task(NewTask("travel_segment", row_params))
    run_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.result["adjusted"] == {"segment_frames_target": {"requested": 8, "used": 9}}
    assert len(read_video(row.output_location, "segment")) == 9


@pytest.mark.parametrize(("change", "message"), [
    (lambda p: p.pop("segment_index"), "params.segment_index is required in an older-shape row"),
    (lambda p: p.update(segment_index=3),
     "input_image_paths_resolved has 2 images; segment 3 needs image 4 as its end keyframe"),
    (lambda p: p["full_orchestrator_payload"].update(model_name="tiny_t2v") or p.pop("model_name"),
     "'tiny_t2v'"),
    (lambda p: p.update(full_orchestrator_payload="x"), "params.full_orchestrator_payload must be an object"),
])
def test_a_broken_older_segment_fails_naming_the_key(sqlite_store, tmp_path, keyframes, change, message):
    row_params = older_segment(older_travel_payload(keyframes[:2]), "gone", 0)
    change(row_params)
    task = sqlite_store.add_task(NewTask("travel_segment", row_params))
    run_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.FAILED and message in row.error_message, row.error_message


def test_an_older_stitch_completes_the_older_orchestrator_with_the_final_video(sqlite_store, tmp_path, keyframes):
    """The older stitch set the row named by orchestrator_task_id_ref Complete with the final output; the
    reclaim of lease-less rows leaves that row waiting meanwhile (it would otherwise run it all again)."""
    orchestrator, _, stitch = queue_older_travel(sqlite_store, keyframes[:2])
    run_in_process(sqlite_store, tmp_path / "out")
    final = sqlite_store.get_task(stitch)
    assert final.status is TaskStatus.COMPLETE, final.error_message
    row = sqlite_store.get_task(orchestrator)
    assert row.status is TaskStatus.COMPLETE and row.output_location == final.output_location
    assert row.result["completed_by_task_id"] == stitch and row.attempts == 0
    assert sqlite_store.list_child_tasks(orchestrator) == []  # not run again as a current orchestrator
    assert "older_orchestrator_left" not in final.result


def test_an_older_orchestrator_is_not_reclaimed_until_its_older_final_child_has_ended(store):
    """Every backend: a lease-less In Progress row is the older worker's, normally reclaimed; its waiting
    orchestrator is left to the older stitch that names it, and reclaimed (run again) once that ended."""
    orchestrator = store.add_task(NewTask("travel_orchestrator", {}))
    older_worker_wrote(store, orchestrator, "In Progress", None)
    stitch = store.add_task(NewTask("travel_stitch", {"orchestrator_task_id_ref": orchestrator,
                                                      "full_orchestrator_payload": {}}))
    assert orchestrator not in {r.task_id for r in store.reclaim_expired_leases()}
    assert store.claim_next_task("w1", lease_seconds=30).id == stitch
    assert orchestrator not in {r.task_id for r in store.reclaim_expired_leases()}
    assert store.fail_task(stitch, "w1", error_message="boom")
    assert orchestrator in {r.task_id for r in store.reclaim_expired_leases()}
    assert store.get_task(orchestrator).status is TaskStatus.QUEUED


@pytest.mark.parametrize(("status", "reason"), [("Complete", "it is Complete, not In Progress"),
                                                ("ping", "it is a ping, not a travel_orchestrator")])
def test_an_older_stitch_leaves_a_row_that_is_not_a_waiting_older_orchestrator(sqlite_store, tmp_path, keyframes,
                                                                               status, reason):
    """June 2025 older workers marked the orchestrator Complete at once (their stitch left it alone); a row
    of another type is never completed by a stitch that names it."""
    if status == "ping":
        orchestrator = sqlite_store.add_task(NewTask("ping", {}))
        older_worker_wrote(sqlite_store, orchestrator, "Complete", "/elsewhere/ping.json")
        _, _, stitch = queue_older_travel(sqlite_store, keyframes[:2], orchestrator_row=False)
        with sqlite_store._write() as conn:
            conn.execute("UPDATE tasks SET params = json_set(params, '$.orchestrator_task_id_ref', ?) WHERE id = ?",
                         (orchestrator, stitch))
    else:
        orchestrator, _, stitch = queue_older_travel(sqlite_store, keyframes[:2], orchestrator_status=status)
    run_in_process(sqlite_store, tmp_path / "out")
    final = sqlite_store.get_task(stitch)
    assert final.status is TaskStatus.COMPLETE, final.error_message
    assert final.result["older_orchestrator_left"] == f"{orchestrator}: {reason}"
    row = sqlite_store.get_task(orchestrator)
    assert row.status is TaskStatus.COMPLETE and row.output_location != final.output_location


def test_an_older_stitch_with_an_upscale_factor_resizes_the_final_video(sqlite_store, tmp_path, keyframes):
    """The older stitch upscaled the final video by upscale_factor (through upscale_model_name); here with
    WanGP's Lanczos spatial upsampling, recorded in result, the model name listed as ignored."""
    _, _, stitch = queue_older_travel(sqlite_store, keyframes[:2], upscale_factor=1.5,
                                      upscale_model_name="older-upscaler")
    run_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(stitch)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    final = read_video(row.output_location, "final")
    assert len(final) == 9 and final.shape[1:3] == (SIZE * 3 // 2, SIZE * 3 // 2)
    assert row.result["upscale"] == {"factor": 1.5, "method": "lanczos", "resolution": "48x48"}
    assert "full_orchestrator_payload.upscale_model_name" in row.result["ignored_params"]


def test_an_older_stitch_asking_for_too_large_an_upscale_fails_naming_the_limit(sqlite_store, tmp_path, keyframes):
    payload = older_travel_payload(keyframes)
    task = sqlite_store.add_task(NewTask("travel_stitch", {**older_stitch(payload, "gone"), "upscale_factor": 8.0}))
    run_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.FAILED
    assert "params.upscale_factor: Input should be less than or equal to 4" in row.error_message


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres_store", "postgres_adopted_store"])
def test_an_older_travel_completes_its_older_orchestrator_through_a_worker_process_on_postgres(
        request, backend, tmp_path, keyframes):
    from tests.helpers import run_worker

    store = request.getfixturevalue(backend)
    orchestrator, segments, stitch = queue_older_travel(store, keyframes[:2])
    done = run_worker(store._conninfo, tmp_path / "out", "--once", "--input-roots", str(tmp_path), timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [store.get_task(t) for t in [*segments, stitch]]
    assert [r.status for r in rows] == [TaskStatus.COMPLETE] * 2, [r.error_message for r in rows]
    row = store.get_task(orchestrator)
    assert row.status is TaskStatus.COMPLETE and row.output_location == rows[-1].output_location
    assert row.result["completed_by_task_id"] == stitch and store.list_child_tasks(orchestrator) == []


def test_older_dp_final_gen_reads_its_steps_by_the_older_task_ids(sqlite_store, tmp_path, keyframes):
    """The older different-perspective chain: its pose steps are plain rows named in ``task_ids``."""
    user_pose = sqlite_store.add_task(NewTask("ping", {}))
    view_pose = sqlite_store.add_task(NewTask("ping", {}))
    with sqlite_store._write() as conn:
        for task_id, image in ((user_pose, keyframes[1]), (view_pose, keyframes[2])):
            conn.execute("UPDATE tasks SET status = 'Complete', output_location = ? WHERE id = ?", (image, task_id))
    original = {"input_image_path": keyframes[0], "prompt": "the same scene from the left",
                "model_name": "tiny_vace", "resolution": f"{SIZE}x{SIZE}", "seed": 3, "perspective_type": "pose",
                "fps_helpers": 16, "use_causvid_lora": False, "debug_mode": False}  # output_video_frames: older 16
    orchestrator = sqlite_store.add_task(NewTask("different_perspective_orchestrator", original))
    older_worker_wrote(sqlite_store, orchestrator, "In Progress", None)  # the older worker left it waiting
    params = {"task_id": "dp_final_gen_x", "dp_orchestrator_payload": {
        "run_id": "dp_run_x", "orchestrator_task_id": orchestrator, "work_dir": "/srv/older/work",
        "main_output_dir": "/srv/older/public/files", "original_params": original, "perspective_type": "pose",
        "task_ids": {"user_persp": user_pose, "t2i": "t", "extract": "e", "t2i_persp": view_pose, "final_gen": "f"},
        "debug_mode": False, "skip_cleanup": False}}
    task = sqlite_store.add_task(NewTask("dp_final_gen", params, dependant_on=view_pose))
    run_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert Path(row.output_location).suffix == ".png" and row.result["seed"] == 4  # the older final step's seed + 1
    assert row.result["adjusted"] == {"output_video_frames": {"requested": 16, "used": 17}}
    assert {"task_id", "dp_orchestrator_payload.work_dir", "dp_orchestrator_payload.original_params.debug_mode"} \
        <= set(row.result["ignored_params"])
    # the older final step completed the orchestrator row with the final image
    parent = sqlite_store.get_task(orchestrator)
    assert parent.status is TaskStatus.COMPLETE and parent.output_location == row.output_location


def test_older_continue_from_video_segment_uses_the_video_tail(sqlite_store, tmp_path, keyframes):
    video = write_video(__import__("numpy").random.default_rng(1).random((9, SIZE, SIZE, 3)), tmp_path / "c.mp4", 16)
    payload = older_travel_payload(keyframes[:1], continue_from_video_resolved_path=str(video),
                                   num_new_segments_to_generate=1, base_prompts_expanded=["on"],
                                   negative_prompts_expanded=[""], segment_frames_expanded=[9],
                                   frame_overlap_expanded=[3])
    row_params = {**older_segment(payload, "gone", 0), "frame_overlap_from_previous": 3,
                  "continue_from_video_resolved_path_for_guide": str(video)}
    task = sqlite_store.add_task(NewTask("travel_segment", row_params))
    run_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.result["kept_frames"] == [0, 1, 2, 8]
