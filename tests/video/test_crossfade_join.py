"""travel_stitch with clip_urls (Reigh's crossfade join): the clips joined with the asked overlaps by a real
worker process, their sound carried through, no orchestrator."""

from __future__ import annotations

import numpy as np

from source.db.models import NewTask, TaskStatus
from source.media.audio import RATE, read_audio
from source.media.video import read_video
from tests.helpers import run_worker
from tests.video import reigh_rows
from tests.video.clips import dominant_hz, make_clip

FPS = 16


def test_crossfade_join_rows_from_reigh_join_the_clips_with_their_overlaps_and_sound(sqlite_store, tmp_path):
    lengths, overlaps = [12, 10, 14], [4, 3]
    clips = [str(make_clip(tmp_path / f"clip{i}.mp4", n, i, fps=FPS, tone_hz=tone))
             for i, (n, tone) in enumerate(zip(lengths, [440.0, None, 1000.0], strict=True))]
    soundtrack = str(make_clip(tmp_path / "music.mp4", 60, 0, fps=FPS, tone_hz=300.0))
    own_sound = sqlite_store.add_task(NewTask("travel_stitch", reigh_rows.crossfade_join(clips, overlaps)))
    with_track = sqlite_store.add_task(NewTask("travel_stitch", reigh_rows.crossfade_join(
        clips[:2], [2], audio_url=soundtrack)))
    wrong_count = sqlite_store.add_task(NewTask("travel_stitch", reigh_rows.crossfade_join(clips, [4])))
    too_long = sqlite_store.add_task(NewTask("travel_stitch", reigh_rows.crossfade_join(clips[:2], [11])))

    run = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--input-roots", str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]

    row = sqlite_store.get_task(own_sound)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    final = read_video(row.output_location, "joined")
    assert len(final) == sum(lengths) - sum(overlaps) == row.result["frames"]
    assert row.result["audio"] == "clips" and "ignored_params" not in row.result
    # Outside the overlaps every frame is its clip's own (up to H.264 loss).
    first, last = read_video(clips[0], "c0").astype(float), read_video(clips[2], "c2").astype(float)
    assert np.abs(final[: lengths[0] - overlaps[0]] - first[: lengths[0] - overlaps[0]]).mean() < 6
    assert np.abs(final[-(lengths[2] - overlaps[1]):] - last[overlaps[1]:]).mean() < 6
    sound = read_audio(row.output_location)
    assert abs(sound.shape[1] / RATE - len(final) / FPS) < 0.05
    second = round(lengths[0] / FPS * RATE)  # clip 0's sound runs to its last frame, then clip 1 (silent)
    assert abs(dominant_hz(sound[:, : second - 2048]) - 440) < 20
    assert np.abs(sound[:, second + 2048: second + 4096]).max() < 0.05
    assert abs(dominant_hz(sound[:, -RATE // 4:]) - 1000) < 20

    tracked = sqlite_store.get_task(with_track)
    assert tracked.status is TaskStatus.COMPLETE, tracked.error_message
    assert len(read_video(tracked.output_location, "joined")) == 12 + 10 - 2
    assert tracked.result["audio"] == "audio_url" and abs(dominant_hz(read_audio(tracked.output_location)) - 300) < 20

    for task_id, words in ((wrong_count, "has 1 entries; 3 clips need 2"), (too_long, "[0] is 11, longer than")):
        failed = sqlite_store.get_task(task_id)
        assert failed.status is TaskStatus.FAILED and words in failed.error_message, failed.error_message
