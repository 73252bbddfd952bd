"""The ltx2 task type: tiny LTX-2 through a real worker; the mp4 carries the soundtrack the model generated."""

from __future__ import annotations

import av
import numpy as np
import pytest

from source.db.models import NewTask, TaskStatus
from source.engine.model_defs import load_model_def
from source.media.video import read_video
from source.routing import model_for_task_type
from tests.helpers import run_worker


@pytest.mark.slow
def test_ltx2_row_makes_a_video_with_its_generated_audio_stream(sqlite_store, tmp_path):
    task_id = sqlite_store.add_task(NewTask("ltx2", {"prompt": "a cat runs on the beach", "model": "tiny_ltx2",
                                                     "video_length": 9, "seed": 4}))
    run = run_worker(sqlite_store.path, tmp_path / "out", "--once", timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert len(read_video(row.output_location, "ltx2")) == 9
    with av.open(row.output_location) as container:
        assert len(container.streams.audio) == 1
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac" and stream.rate == 16000  # the vocoder's rate
        samples = np.concatenate([frame.to_ndarray() for frame in container.decode(stream)], axis=1)
    assert samples.shape[0] == 2 and np.abs(samples).max() > 0  # generated sound, not silence
    assert abs(samples.shape[1] / 16000 - 9 / 24) < 0.1  # as long as the video at LTX-2's 24 fps
    assert row.result["audio"]["sample_rate"] == 16000


def test_ltx2_definitions_follow_wangp():
    assert model_for_task_type("ltx2") == "ltx2_19B"
    dev, distilled = load_model_def("ltx2_19B"), load_model_def("ltx2_distilled")
    assert dev.architecture == distilled.architecture == "ltx2"
    assert (dev.settings["num_inference_steps"], distilled.settings["num_inference_steps"]) == (40, 8)
    assert dev.settings["video_length"] == distilled.settings["video_length"] == 241
