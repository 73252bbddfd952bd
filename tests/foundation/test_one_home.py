"""Facts with one home: the frame-length rounding rule, the video frame counter, the timeout check and the
cached-LoRA lookup each answer the same way wherever they are asked."""

from __future__ import annotations

import math

import numpy as np
import pytest

from source.engine import loras as engine_loras
from source.engine.params import valid_frame_count
from source.engine.windows import largest_length, plan
from source.errors import InvalidParams, ModelUnavailable
from source.generation import loras as generation_loras
from source.generation.conversion import db_task_to_generation_task
from source.media.video import count_frames, save_video
from source.orchestrators.checks import nearest_frame_count
from source.worker.limits import task_timeout


@pytest.mark.parametrize("value, nearest, down, up", [(1, 1, 1, 1), (4, 5, 1, 5), (7, 9, 5, 9), (17, 17, 17, 17),
                                                       (19, 21, 17, 21)])
def test_frame_lengths_round_by_one_rule(value, nearest, down, up):
    assert valid_frame_count(value) == nearest
    assert valid_frame_count(value, toward="down") == largest_length(value, 4) == down
    assert valid_frame_count(value, toward="up") == up
    # a sliding-window plan's last window is the shortest valid length covering what is left
    assert plan(value, 81, 1, 0, 4)[-1].length == up


def test_orchestrator_frame_counts_are_never_below_five():
    adjusted: dict = {}
    assert nearest_frame_count("params.frames", 2, adjusted) == 5
    assert adjusted["frames"] == {"requested": 2, "used": 5}


def test_video_frames_are_counted_by_decoding(tmp_path):
    video = save_video(np.zeros((7, 16, 16, 3), dtype=np.uint8), tmp_path / "v.mp4", 8)
    assert count_frames(video) == 7
    (tmp_path / "not.mp4").write_bytes(b"no video here")
    assert count_frames(tmp_path / "not.mp4") == 0


@pytest.mark.parametrize("bad", [math.inf, -1, 0, True, "60", math.nan])
def test_timeout_seconds_is_refused_the_same_way_by_worker_and_generation(bad):
    with pytest.raises(InvalidParams, match="timeout_seconds must be a positive number") as worker:
        task_timeout("ping", {"timeout_seconds": bad}, None)
    with pytest.raises(InvalidParams) as generation:
        db_task_to_generation_task("t", "t2v", {"prompt": "a cat", "timeout_seconds": bad})
    assert str(worker.value) == str(generation.value)


def test_a_valid_timeout_is_used_by_both():
    assert task_timeout("ping", {"timeout_seconds": 12}, None) == 12.0
    assert db_task_to_generation_task("t", "t2v", {"prompt": "a", "timeout_seconds": 12}).timeout_seconds == 12.0


def test_an_evicted_cached_lora_fails_with_one_message(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_loras, "lora_cache_dir", lambda: tmp_path)
    name = "sha256:" + "ab" * 32 + ":style.safetensors"
    with pytest.raises(ModelUnavailable, match="is not in the LoRA cache .it may have been evicted.") as engine:
        engine_loras.resolve_lora("wan", name)
    with pytest.raises(ModelUnavailable, match="^params.additional_loras: LoRA") as generation:
        generation_loras.fetch_lora(name, tmp_path / "wan")
    assert str(generation.value).endswith(str(engine.value))
    (tmp_path / f"{'ab' * 32}.safetensors").write_bytes(b"x")
    assert engine_loras.resolve_lora("wan", name) == tmp_path / f"{'ab' * 32}.safetensors"
    assert generation_loras.fetch_lora(name, tmp_path / "wan") == name
