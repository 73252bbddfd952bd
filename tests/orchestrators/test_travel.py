"""travel_orchestrator → travel_segment × 2 → travel_stitch on tiny VACE, real SQLite, real worker processes."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest

from source.db.models import NewTask, TaskStatus
from source.media.video import crossfade_weights, read_video
from tests.helpers import run_worker, start_worker, wait_for
from tests.orchestrators.conftest import run_in_process, travel_params

FRAMES, OVERLAP = 9, 4


def _children(store, parent_id):
    return {row.child_key: row for row in store.list_child_tasks(parent_id)}


def test_travel_run_on_two_workers_survives_a_killed_worker_and_crossfades_the_overlap(
    sqlite_store, tmp_path, keyframes
):
    out = tmp_path / "out"
    orchestrator = sqlite_store.add_task(NewTask("travel_orchestrator", travel_params(keyframes)))
    args = ("--lease-seconds", "2", "--poll-interval", "1", "--colour-match-videos", "--input-roots", str(tmp_path))
    workers = {name: start_worker(sqlite_store.path, out, "--worker", name, *args, log_path=tmp_path / f"{name}.log")
               for name in ("wA", "wB")}
    try:
        seg2 = wait_for(lambda: _children(sqlite_store, orchestrator).get("segment_001"), timeout=60)
        running = wait_for(lambda: (row := sqlite_store.get_task(seg2.id)).status is TaskStatus.IN_PROGRESS and row,
                           timeout=90, interval=0.02)
        victim = workers.pop(running.worker_id)
        victim.send_signal(signal.SIGKILL)
        victim.wait()  # the surviving worker reclaims segment 2 once its lease expires
        wait_for(lambda: sqlite_store.get_task(orchestrator).status.is_final, timeout=120, interval=0.1)
    finally:
        for proc in workers.values():
            proc.terminate()
            proc.wait(timeout=30)

    parent = sqlite_store.get_task(orchestrator)
    assert parent.status is TaskStatus.COMPLETE, (parent.error_message, (tmp_path / "wA.log").read_text()[-3000:])
    children = _children(sqlite_store, orchestrator)
    assert sorted(children) == ["segment_000", "segment_001", "stitch"]
    assert all(row.status is TaskStatus.COMPLETE for row in children.values())
    assert children["segment_001"].attempts == 2  # the killed attempt, then the reclaimed one
    assert children["segment_001"].dependant_on == children["segment_000"].id
    assert children["stitch"].dependant_on == children["segment_001"].id
    assert parent.output_location == children["stitch"].output_location and Path(parent.output_location).is_file()
    assert parent.result["child_task_ids"] == [children[k].id for k in ("segment_000", "segment_001", "stitch")]
    # the mask keeps the keyframes (and segment 2's overlap from segment 1) and generates the rest
    assert children["segment_000"].result["kept_frames"] == [0, FRAMES - 1]
    assert children["segment_001"].result["kept_frames"] == [*range(OVERLAP), FRAMES - 1]
    assert all(children[k].result["colour_matched"] for k in ("segment_000", "segment_001"))

    first = read_video(children["segment_000"].output_location, "segment 0").astype(np.float32)
    second = read_video(children["segment_001"].output_location, "segment 1").astype(np.float32)
    final = read_video(parent.output_location, "final").astype(np.float32)
    assert len(first) == len(second) == FRAMES
    assert len(final) == 2 * FRAMES - OVERLAP
    # Each overlap frame of the final video is the weighted blend of segment 0's tail and segment 1's head
    # (up to H.264 loss), and far from either side alone.
    weights = crossfade_weights(OVERLAP, 0.0)
    for j, weight in enumerate(weights):
        a, b, got = first[FRAMES - OVERLAP + j], second[j], final[FRAMES - OVERLAP + j]
        blend = (1 - weight) * a + weight * b
        err_blend = np.abs(got - blend).mean()
        if 0.25 <= weight <= 0.75:
            assert err_blend < 0.5 * np.abs(got - a).mean() and err_blend < 0.5 * np.abs(got - b).mean(), j
        assert err_blend < 6.0, (j, err_blend)
    assert np.abs(final[: FRAMES - OVERLAP] - first[: FRAMES - OVERLAP]).mean() < 6.0
    assert np.abs(final[FRAMES:] - second[OVERLAP:]).mean() < 6.0

    # Running the orchestrator row again (as after a crash) inserts no duplicate children and finishes at once.
    with sqlite_store._write() as conn:
        conn.execute("UPDATE tasks SET status = 'Queued', awaiting_children = 0 WHERE id = ?", (orchestrator,))
    assert run_worker(sqlite_store.path, out, "--once", "--worker", "again", "--input-roots", str(tmp_path)).returncode == 0
    assert len(sqlite_store.list_child_tasks(orchestrator)) == 3
    assert len(sqlite_store.list_tasks(limit=100)) == 4
    again = sqlite_store.get_task(orchestrator)
    assert (again.status, again.output_location) == (TaskStatus.COMPLETE, parent.output_location)


def test_failing_first_segment_fails_the_orchestrator_and_the_rest_of_the_chain(sqlite_store, tmp_path, keyframes):
    out = tmp_path / "out"
    orchestrator = sqlite_store.add_task(NewTask("travel_orchestrator", travel_params(keyframes)))
    run_in_process(sqlite_store, out, max_tasks=1)
    assert sqlite_store.get_task(orchestrator).awaiting_children
    kept = Path(keyframes[1]).read_bytes()
    Path(keyframes[1]).unlink()  # segment 0's end keyframe disappears after validation
    run_in_process(sqlite_store, out)
    children = _children(sqlite_store, orchestrator)
    seg1, seg2, stitch = children["segment_000"], children["segment_001"], children["stitch"]
    assert seg1.status is TaskStatus.FAILED and "end_image_path: file not found" in seg1.error_message
    assert seg2.status is TaskStatus.FAILED and seg2.error_message.startswith(f"dependency {seg1.id} ended Failed")
    assert stitch.status in (TaskStatus.FAILED, TaskStatus.CANCELLED)
    parent = sqlite_store.get_task(orchestrator)
    assert parent.status is TaskStatus.FAILED
    assert parent.error_message.startswith(f"child travel_segment {seg1.id} ended Failed: ")
    assert "end_image_path: file not found" in parent.error_message
    assert sqlite_store.list_tasks(status=TaskStatus.QUEUED) == []

    # Once the input is back, retrying the orchestrator resumes the same chain (no new rows).
    Path(keyframes[1]).write_bytes(kept)
    assert sqlite_store.retry_task(orchestrator)
    run_in_process(sqlite_store, out, max_tasks=1)
    assert sqlite_store.get_task(orchestrator).awaiting_children
    again = _children(sqlite_store, orchestrator)
    assert {k: r.id for k, r in again.items()} == {k: r.id for k, r in children.items()}
    assert {r.status for r in again.values()} == {TaskStatus.QUEUED}


def test_cancelling_the_orchestrator_cancels_its_unfinished_children(sqlite_store, tmp_path, keyframes):
    orchestrator = sqlite_store.add_task(NewTask("travel_orchestrator", travel_params(keyframes)))
    run_in_process(sqlite_store, tmp_path / "out", max_tasks=1)
    assert sqlite_store.cancel_task(orchestrator)
    children = sqlite_store.list_child_tasks(orchestrator)
    assert len(children) == 3
    assert {row.status for row in children} == {TaskStatus.CANCELLED}
    assert all(row.error_message == f"parent {orchestrator} ended Cancelled: cancelled by request" for row in children)


def test_parked_orchestrator_is_never_reclaimed_but_a_legacy_row_without_lease_is(sqlite_store, tmp_path, keyframes):
    orchestrator = sqlite_store.add_task(NewTask("travel_orchestrator", travel_params(keyframes)))
    run_in_process(sqlite_store, tmp_path / "out", max_tasks=1)
    legacy = sqlite_store.add_task(NewTask("ping", {}))
    with sqlite_store._write() as conn:
        conn.execute("UPDATE tasks SET status = 'In Progress', lease_expires_at = NULL WHERE id = ?", (legacy,))
    reclaimed = {r.task_id for r in sqlite_store.reclaim_expired_leases()}
    assert reclaimed == {legacy}
    row = sqlite_store.get_task(orchestrator)
    assert (row.status, row.awaiting_children, row.lease_expires_at) == (TaskStatus.IN_PROGRESS, True, None)


BAD = [
    ({"segment_frames_expanded": [9, 0]}, "segment_frames_expanded[1] is 0; send a frame count of at least 5"),
    ({"segment_frames_expanded": [9]}, "segment_frames_expanded has 1 entries; 2 segment(s) need 2"),
    ({"base_prompts_expanded": ["a"]}, "base_prompts_expanded has 1 entries; 2 segment(s) need 2"),
    ({"frame_overlap_expanded": [9, 4]}, "the overlap into segment 1 (9 frames) must be smaller than the segments"),
    ({"frame_overlap_expanded": [4, 4, 4]}, "frame_overlap_expanded has 3 entries; 2 segment(s) need 1"),
    ({"parsed_resolution_wh": "big"}, "parsed_resolution_wh must look like 'WIDTHxHEIGHT'"),
    ({"model_name": "tiny_t2v"}, "'tiny_t2v' is a wan_t2v model; a travel needs wan_i2v or wan_vace"),
    ({"model_name": "nope"}, "orchestrator_details.model_name: unknown model_type 'nope'"),
    ({"num_new_segments_to_generate": 3}, "num_new_segments_to_generate is 3 but 3 images make 2 segments"),
    ({"input_image_paths_resolved": ["/no/such.png", "/no/other.png"], "num_new_segments_to_generate": 1,
      "base_prompts_expanded": ["a"], "negative_prompts_expanded": [""], "segment_frames_expanded": [9],
      "frame_overlap_expanded": []}, "input_image_paths_resolved[0]: file not found: /no/such.png"),
    ({"fade_in_params_json_str": "{bad"}, "fade_in_params_json_str is not valid JSON"),
    ({"segment_frames_expanded": "9,9"}, "params.orchestrator_details.segment_frames_expanded: Input should be a valid list"),
]


@pytest.mark.parametrize(("override", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_invalid_travel_params_fail_the_orchestrator_with_a_precise_message(
    sqlite_store, tmp_path, keyframes, override, message
):
    orchestrator = sqlite_store.add_task(NewTask("travel_orchestrator", travel_params(keyframes, **override)))
    run_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(orchestrator)
    assert row.status is TaskStatus.FAILED
    assert message in row.error_message, row.error_message
    assert sqlite_store.list_child_tasks(orchestrator) == []


def test_missing_orchestrator_details_is_a_clear_error(sqlite_store, tmp_path):
    orchestrator = sqlite_store.add_task(NewTask("travel_orchestrator", {"run_id": "x"}))
    run_in_process(sqlite_store, tmp_path / "out")
    assert "params.orchestrator_details is required" in sqlite_store.get_task(orchestrator).error_message


def test_wangp_params_beside_the_travel_reach_its_segments_and_only_unknown_keys_are_ignored(
        sqlite_store, tmp_path, keyframes):
    params = {**travel_params(keyframes, cfg_star_switch=1, perturbation_switch=0, repeat_generation=1),
              "travel_colour": "warm"}
    orchestrator = sqlite_store.add_task(NewTask("travel_orchestrator", params))
    run_in_process(sqlite_store, tmp_path / "out", max_tasks=1)
    row = sqlite_store.get_task(orchestrator)
    assert row.awaiting_children, row.error_message
    # repeat_generation 1 is WanGP's "off"; travel_colour is no WanGP parameter at all
    assert row.result["ignored_params"] == ["travel_colour"]
    for child in sqlite_store.list_child_tasks(orchestrator):
        if child.task_type == "travel_segment":
            assert child.params()["generation"] == {"cfg_star_switch": 1, "slg_switch": 0}
        assert "travel_colour" not in json.dumps(child.params())


def test_a_wangp_param_this_worker_does_not_run_fails_the_travel_naming_it(sqlite_store, tmp_path, keyframes):
    orchestrator = sqlite_store.add_task(NewTask("travel_orchestrator", travel_params(keyframes, repeat_generation=2)))
    run_in_process(sqlite_store, tmp_path / "out", max_tasks=1)
    row = sqlite_store.get_task(orchestrator)
    assert row.status is TaskStatus.FAILED
    assert "params.orchestrator_details.repeat_generation 2: one row makes one generation" in row.error_message


def test_frame_counts_and_sizes_wangp_would_adjust_are_rounded_and_recorded(sqlite_store, tmp_path, keyframes):
    orchestrator = sqlite_store.add_task(NewTask("travel_orchestrator", travel_params(
        keyframes, segment_frames_expanded=[8, 10], parsed_resolution_wh="30x34")))
    run_in_process(sqlite_store, tmp_path / "out", max_tasks=1)
    row = sqlite_store.get_task(orchestrator)
    assert row.awaiting_children, row.error_message
    assert row.result["adjusted"] == {
        "orchestrator_details.segment_frames_expanded[0]": {"requested": 8, "used": 9},
        "orchestrator_details.segment_frames_expanded[1]": {"requested": 10, "used": 9},
        "orchestrator_details.parsed_resolution_wh": {"requested": "30x34", "used": "32x32"},
    }
    segments = [c.params() for c in sqlite_store.list_child_tasks(orchestrator) if c.task_type == "travel_segment"]
    assert [s["segment_frames_target"] for s in segments] == [9, 9]
    assert {s["resolution"] for s in segments} == {"32x32"}


def test_the_orchestrators_upscale_factor_reaches_its_stitch(sqlite_store, tmp_path, keyframes):
    """upscale_factor is honoured by the stitch (Lanczos, see test_older_children); the model name the older
    stitch ran it through is not, and says so."""
    params = travel_params(keyframes, upscale_factor=2.0, upscale_model_name="older-upscaler")
    orchestrator = sqlite_store.add_task(NewTask("travel_orchestrator", params))
    run_in_process(sqlite_store, tmp_path / "out", max_tasks=1)
    row = sqlite_store.get_task(orchestrator)
    assert row.awaiting_children, row.error_message
    assert row.result["ignored_params"] == ["orchestrator_details.upscale_model_name"]
    stitch = next(c for c in sqlite_store.list_child_tasks(orchestrator) if c.task_type == "travel_stitch")
    assert stitch.params()["upscale_factor"] == 2.0
