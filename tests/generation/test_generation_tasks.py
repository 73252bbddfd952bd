"""Direct generation task types from a db row to a Complete row with a real file (tiny models)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import source.cli.tasks as task_cli
from source.db.models import NewTask, TaskStatus
from source.worker.settings import WorkerSettings
from tests.engine.test_generate_video import read_video
from tests.helpers import generation_queue, in_process_worker


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from source.media.write import write_video

    folder = tmp_path_factory.mktemp("gen-inputs")
    rng = np.random.default_rng(1)
    image = folder / "start.png"
    cv2.imwrite(str(image), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    guide = write_video(np.linspace(0, 1, 5)[:, None, None, None] * np.ones((5, 32, 32, 3)), folder / "guide.mp4", 16)
    mask = np.zeros((5, 32, 32, 3))
    mask[2:] = 1
    return {"image": str(image), "guide": str(guide), "mask": str(write_video(mask, folder / "mask.mp4", 16))}


def run_worker_in_process(store, out, queue=None, **settings):
    """Inputs live in pytest's temp folders and test servers on 127.0.0.1: allowed unless ``settings`` say."""
    settings = {"input_roots": (Path(tempfile.gettempdir()),), "allow_private_urls": True, **settings}
    worker = in_process_worker(store, WorkerSettings(worker_id="gen-w", main_output_dir=out, **settings), queue,
                               exit_when_idle=True)
    assert worker.run() == 0


CASES = [
    ("generate_video", {"model": "tiny_t2v"}, ".mp4", 5),
    ("wgp", {"model": "tiny_t2v"}, ".mp4", 5),
    ("t2v", {"model": "tiny_t2v", "steps": 3, "resolution": "48x32"}, ".mp4", 5),
    ("t2v_22", {"model": "tiny_t2v_2_2"}, ".mp4", 5),
    ("wan_2_2_t2i", {"model": "tiny_t2v_2_2"}, ".png", 1),
    ("vace", {"model": "tiny_vace", "video_guide": "guide", "video_mask": "mask", "image_refs": ["image"]}, ".mp4", 5),
    ("vace_21", {"model": "tiny_vace", "video_guide": "guide"}, ".mp4", 5),
    ("vace_22", {"model": "tiny_vace", "video_guide": "guide", "video_mask": "mask"}, ".mp4", 5),
    ("i2v", {"model": "tiny_i2v", "image_start": "image"}, ".mp4", 5),
    ("i2v_22", {"model": "tiny_i2v_2_2", "image_start": "image", "image_end": "image"}, ".mp4", 5),
    ("flux", {"model": "tiny_flux"}, ".png", 1),
    ("hunyuan", {"model": "tiny_hunyuan"}, ".mp4", 5),
    ("ltxv", {"model": "tiny_ltxv"}, ".mp4", 9),
]


def test_every_direct_generation_type_completes_with_a_valid_file(sqlite_store, tmp_path, inputs):
    ids = {}
    for task_type, params, _, _ in CASES:
        resolved = {k: ([inputs[x] for x in v] if isinstance(v, list) else inputs.get(v, v)) for k, v in params.items()}
        ids[task_type] = sqlite_store.add_task(NewTask(task_type, {"prompt": "a cat dances", "seed": 3, **resolved}))
    run_worker_in_process(sqlite_store, tmp_path / "out")
    for task_type, _, suffix, frames in CASES:
        row = sqlite_store.get_task(ids[task_type])
        assert row.status is TaskStatus.COMPLETE, (task_type, row.error_message)
        assert row.output_location.endswith(suffix), task_type
        assert row.result["seed"] == 3 and row.result["model"].startswith("tiny_")
        if suffix == ".mp4":
            assert read_video(row.output_location).shape[0] == frames, task_type
        else:
            assert cv2.imread(row.output_location) is not None, task_type


def test_same_model_stays_resident_and_alternating_models_switch_each_time(sqlite_store, tmp_path):
    queue = generation_queue(tmp_path / "out")
    before = dict(queue.stats.as_dict())
    for _ in range(2):
        sqlite_store.add_task(NewTask("t2v", {"prompt": "same", "model": "tiny_t2v"}))
    run_worker_in_process(sqlite_store, tmp_path / "out", queue)
    after_same = queue.stats.as_dict()
    assert after_same["model_loads"] - before["model_loads"] == 1
    for model in ("tiny_flux", "tiny_t2v", "tiny_flux"):
        sqlite_store.add_task(NewTask("flux", {"prompt": "alt", "model": model}))
        run_worker_in_process(sqlite_store, tmp_path / "out", queue)
    after_alternating = queue.stats.as_dict()
    assert after_alternating["model_switches"] - after_same["model_switches"] == 3

    # The same counters reach the workers table, where `tasks workers` shows them.
    record = sqlite_store.list_workers(alive_within_seconds=60)[0]
    assert record.stats["model_switches"] == after_alternating["model_switches"]
    assert record.stats["tasks_completed"] == after_alternating["tasks_completed"]
    shown = CliRunner().invoke(task_cli.cli, ["workers", "--db-file", str(sqlite_store.path)])
    assert f"switches={after_alternating['model_switches']}" in shown.output, shown.output


def test_claim_prefers_rows_for_the_resident_model(sqlite_store, tmp_path):
    queue = generation_queue(tmp_path / "out")
    queue.generator.load_model("tiny_t2v")
    other = sqlite_store.add_task(NewTask("flux", {"prompt": "x", "model": "tiny_flux"}))
    mine = sqlite_store.add_task(NewTask("t2v", {"prompt": "y", "model": "tiny_t2v"}))
    run_worker_in_process(sqlite_store, tmp_path / "out", queue)
    started = {i: sqlite_store.get_task(i).generation_started_at for i in (other, mine)}
    assert started[mine] < started[other]


@pytest.mark.parametrize(
    ("task_type", "params", "message"),
    [
        ("t2v", {"model": "tiny_t2v"}, "params.prompt is required"),
        ("t2v", {"model": "tiny_t2v", "prompt": "   "}, "params.prompt is required"),
        ("vace", {"model": "tiny_vace", "prompt": "x"}, "is a VACE model: params.video_guide is required"),
        ("vace", {"model": "tiny_vace", "prompt": "x", "video_guide": "/nope/guide.mp4"},
         "params.video_guide: file not found: /nope/guide.mp4"),
        ("vace", {"model": "tiny_vace", "prompt": "x", "video_guide": "ftp://example.com/g.mp4"},
         "URL scheme 'ftp' is not allowed"),
        ("i2v", {"model": "tiny_i2v", "prompt": "x"}, "params.image_start is required"),
        ("t2v", {"model": "no_such_model", "prompt": "x"}, "unknown model_type 'no_such_model'"),
        ("t2v", {"model": "tiny_t2v", "prompt": "x", "resolution": "12by7"}, "params.resolution must look like"),
        ("t2v", {"model": "tiny_t2v", "prompt": "x", "loras_multipliers": "1.0 banana"}, "'banana' is not a number"),
        ("t2v", {"model": 7, "prompt": "x"}, "params.model must be a model name string"),
    ],
)
def test_bad_generation_params_fail_with_a_clear_error(sqlite_store, tmp_path, task_type, params, message):
    task_id = sqlite_store.add_task(NewTask(task_type, params))
    run_worker_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.FAILED
    assert message in row.error_message, row.error_message


def test_reward_lora_applies_only_where_the_model_supports_it(sqlite_store, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a Flux row must not even try to fetch the Wan LoRA
    flux = sqlite_store.add_task(NewTask("flux", {"prompt": "a cat", "model": "tiny_flux"}))
    asked = sqlite_store.add_task(NewTask("flux", {"prompt": "a cat", "model": "tiny_flux", "apply_reward_lora": True}))
    run_worker_in_process(sqlite_store, tmp_path / "out", apply_reward_lora=True)
    row = sqlite_store.get_task(flux)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert "loras" not in row.result
    row = sqlite_store.get_task(asked)
    assert row.status is TaskStatus.FAILED
    assert "params.apply_reward_lora: a Wan LoRA, not supported by model 'tiny_flux'" in row.error_message
