"""The prepare stage (source/generation/prepare.py): one loaded definition per request, every check before
anything is fetched or any model moves."""

from __future__ import annotations

import pytest

from source.engine import model_defs
from source.errors import InvalidParams
from source.generation.conversion import db_task_to_generation_task
from source.task_files.policy import InputPolicy, TaskInputs
from tests.helpers import generation_queue


def _inputs(tmp_path) -> TaskInputs:
    return TaskInputs(tmp_path / "work", InputPolicy(roots=(tmp_path,), allow_private_urls=True))


def test_one_request_loads_its_model_definition_once(tmp_path, monkeypatch):
    queue = generation_queue(tmp_path / "out")
    loaded = []
    raw = model_defs._raw_definition

    def counted(name, chain=()):
        if not chain:  # a definition's own read, not one of the parents it inherits from
            loaded.append(name)
        return raw(name, chain)

    monkeypatch.setattr(model_defs, "_raw_definition", counted)
    request = db_task_to_generation_task("t1", "t2v", {"model": "tiny_t2v", "prompt": "a cat", "seed": 1})
    result = queue.run(request, inputs=_inputs(tmp_path), output_dir=tmp_path / "out")
    assert result.paths and queue.resident_model == "tiny_t2v"
    assert loaded == ["tiny_t2v"]  # prepare loaded it; the switch used that definition


def test_every_check_runs_before_an_input_is_fetched_or_a_model_moves(tmp_path):
    queue = generation_queue(tmp_path / "out")
    # too much work for a tiny model, and a guide nobody serves: the budget is refused, nothing is fetched
    request = db_task_to_generation_task("t2", "vace", {
        "model": "tiny_vace", "prompt": "a cat", "resolution": "1024x1024", "video_length": 81,
        "video_guide": "http://127.0.0.1:9/never-fetched.mp4"})
    with pytest.raises(InvalidParams, match="pixel-steps; model 'tiny_vace' allows at most"):
        queue.run(request, inputs=_inputs(tmp_path))
    assert queue.resident_model is None
    assert not (tmp_path / "work").exists()  # no download was started
