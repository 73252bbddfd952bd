"""join_clips_orchestrator rows as Reigh builds them → join_clips_segment children → join_final_stitch, on
tiny VACE through real worker processes; the tests compute the stitched lengths from the parameters."""

from __future__ import annotations

import numpy as np
import pytest

from source.db.models import NewTask, TaskStatus
from source.media.audio import RATE, read_audio
from source.media.video import read_video
from tests.helpers import run_worker, start_worker, wait_for
from tests.video import reigh_rows
from tests.video.clips import dominant_hz, make_clip

FPS = 16
TINY = {"model": "tiny_vace", "num_inference_steps": 2, "resolution": [32, 32], "phase_config": None}


def bridge_gap(context: int, gap: int) -> int:
    """VACE makes 4n+1 frames: the smallest gap >= the asked one with 2 * context + gap = 4n + 1."""
    while (2 * context + gap - 1) % 4:
        gap += 1
    return gap


def _clips(tmp_path, lengths, tones):
    return [str(make_clip(tmp_path / f"clip{i}.mp4", n, i, fps=FPS, tone_hz=tone))
            for i, (n, tone) in enumerate(zip(lengths, tones, strict=True))]


@pytest.mark.slow
def test_parallel_joins_run_on_two_workers_and_the_stitch_keeps_the_clips_and_their_sound(sqlite_store, tmp_path):
    lengths, context, gap = [17, 13, 15], 4, 6
    clips = _clips(tmp_path, lengths, [440.0, None, 1000.0])
    row = reigh_rows.join_clips(clips, context_frame_count=context, gap_frame_count=gap, replace_mode=False,
                                use_parallel_joins=True, **TINY)
    logs = [tmp_path / f"w{i}.log" for i in range(2)]
    workers = [start_worker(sqlite_store.path, tmp_path / "out", "--worker", f"w{i}", "--input-roots",
                            str(tmp_path), "--poll-interval", "0.5", log_path=log) for i, log in enumerate(logs)]
    try:
        wait_for(lambda: all(log.exists() and "worker_started" in log.read_text() for log in logs), timeout=60)
        parent_id = sqlite_store.add_task(NewTask("join_clips_orchestrator", row))
        wait_for(lambda: sqlite_store.get_task(parent_id).status.is_final, timeout=300, interval=0.2)
    finally:
        for proc in workers:
            proc.terminate()
            proc.wait(timeout=30)

    parent = sqlite_store.get_task(parent_id)
    assert parent.status is TaskStatus.COMPLETE, parent.error_message
    children = {c.child_key: c for c in sqlite_store.list_child_tasks(parent_id)}
    joins = [children["join_000"], children["join_001"]]
    assert all(c.status is TaskStatus.COMPLETE for c in children.values())
    assert [j.dependant_on for j in joins] == [None, None]  # free to run side by side
    assert children["stitch"].dependant_on == joins[-1].id
    assert {c.worker_id for c in children.values()} | {parent.worker_id} == {"w0", "w1"}
    used_gap = bridge_gap(context, gap)
    expected = sum(lengths) + 2 * used_gap
    final = read_video(parent.output_location, "joined")
    assert len(final) == expected == parent.result["frames"] == parent.result["expected_frames"]
    assert parent.result["mode"] == "parallel" and parent.result["audio"] == "clips"
    assert "ignored_params" not in parent.result, parent.result["ignored_params"]
    # each transition is context + gap + context frames
    assert [len(read_video(j.output_location, "t")) for j in joins] == [2 * context + used_gap] * 2
    # frames away from the bridges' cross-fades are the clips' own
    blend = context
    first, last = read_video(clips[0], "c0").astype(float), read_video(clips[2], "c2").astype(float)
    assert np.abs(final[: lengths[0] - blend] - first[: lengths[0] - blend]).mean() < 6
    assert np.abs(final[-(lengths[2] - blend):] - last[blend:]).mean() < 6
    sound = read_audio(parent.output_location)
    assert abs(sound.shape[1] / RATE - expected / FPS) < 0.05
    assert abs(dominant_hz(sound[:, : round((lengths[0] - 2) / FPS * RATE)]) - 440) < 20
    assert abs(dominant_hz(sound[:, -round((lengths[2] - 2 * blend) / FPS * RATE):]) - 1000) < 20


@pytest.mark.slow
def test_chain_replace_loop_and_refusals_from_reigh_rows(sqlite_store, tmp_path):
    lengths, context, gap = [21, 19], 3, 8
    clips = _clips(tmp_path, lengths, [None, None])
    music = str(make_clip(tmp_path / "music.mp4", 80, 0, fps=FPS, tone_hz=300.0))
    chain = sqlite_store.add_task(NewTask("join_clips_orchestrator", reigh_rows.join_clips(
        clips, context_frame_count=context, gap_frame_count=gap, replace_mode=True, use_parallel_joins=False,
        keep_bridging_images=True, audio_url=music, per_join_settings=[{"prompt": "a bridge"}], **TINY)))
    loop = sqlite_store.add_task(NewTask("join_clips_orchestrator", reigh_rows.join_clips(
        clips[:1], loop_first_clip=True, context_frame_count=context, gap_frame_count=gap, replace_mode=False,
        **TINY)))
    enhance = sqlite_store.add_task(NewTask("join_clips_orchestrator", reigh_rows.join_clips(
        clips, enhance_prompt=True, **TINY)))
    vid2vid = sqlite_store.add_task(NewTask("join_clips_orchestrator", reigh_rows.join_clips(
        clips, vid2vid_init_strength=0.5, **TINY)))
    too_short = sqlite_store.add_task(NewTask("join_clips_orchestrator", reigh_rows.join_clips(
        clips, context_frame_count=8, gap_frame_count=40, replace_mode=True, **TINY)))
    run = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--input-roots", str(tmp_path), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]

    parent = sqlite_store.get_task(chain)
    assert parent.status is TaskStatus.COMPLETE, parent.error_message
    children = {c.child_key: c for c in sqlite_store.list_child_tasks(chain)}
    assert sorted(children) == ["join_000", "stitch"]
    assert children["join_000"].result["plan"]["keep_bridging_images"] is True
    final = read_video(parent.output_location, "joined")
    # replace mode: the bridge takes its frames out of the clips' boundary, the length stays
    assert len(final) == sum(lengths) == parent.result["expected_frames"]
    assert parent.result["mode"] == "chain" and parent.result["audio"] == "audio_url"
    assert abs(dominant_hz(read_audio(parent.output_location)) - 300) < 20
    used_gap = bridge_gap(context, gap)
    head = lengths[0] - used_gap // 2 - context  # clip 0's frames before its bridge's context
    assert np.abs(final[:head].astype(float) - read_video(clips[0], "c0")[:head]).mean() < 6

    looped = sqlite_store.get_task(loop)
    assert looped.status is TaskStatus.COMPLETE, looped.error_message
    assert len(read_video(looped.output_location, "looped")) == 2 * lengths[0] + bridge_gap(context, gap)

    for task_id, words in ((enhance, "enhance_prompt: this worker has no vision-language model"),
                           (vid2vid, "vid2vid_init_strength"),
                           (too_short, "join 0: replace_mode takes")):
        failed = sqlite_store.get_task(task_id)
        assert failed.status is TaskStatus.FAILED and words in failed.error_message, failed.error_message
        assert sqlite_store.list_child_tasks(task_id) == []
