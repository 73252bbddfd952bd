"""The three parameter tiers through the real worker process: system defaults < model JSON < task, resolved
once, each value's tier in the row's result; params nobody uses are listed and warned about; a row that
fails its checks never loads a model."""

from __future__ import annotations

import pytest

from source.db.models import NewTask, TaskStatus
from source.engine.params import Tier, parse_values, resolve
from source.errors import DefinitionError, InvalidParams
from source.generation.conversion import db_task_to_generation_task
from tests.helpers import log_events, run_worker


def test_each_tier_wins_where_it_should_through_the_worker_process(sqlite_store, tmp_path):
    # tiny_t2v's JSON sets negative_prompt "blurry", 2 steps, 32x32, guidance 5.0; the system sets the rest.
    plain = sqlite_store.add_task(NewTask("t2v", {"model": "tiny_t2v", "prompt": "a cat", "seed": 4, "steps": 3}))
    explicit = sqlite_store.add_task(NewTask("t2v", {"model": "tiny_t2v", "prompt": "a cat", "seed": 4,
                                                     "negative_prompt": "", "guidance_scale": 2.0}))
    result = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--debug", timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]

    row = sqlite_store.get_task(plain)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    values, tiers = row.result["parameters"], row.result["parameter_sources"]
    assert (values["negative_prompt"], tiers["negative_prompt"]) == ("blurry", "model")  # the model's own
    assert (values["num_inference_steps"], tiers["num_inference_steps"]) == (3, "task")  # `steps` alias
    assert (values["seed"], tiers["seed"]) == (4, "task")
    assert (values["resolution"], tiers["resolution"]) == ("32x32", "model")
    assert (values["guidance_scale"], tiers["guidance_scale"]) == (5.0, "model")
    assert (values["embedded_guidance_scale"], tiers["embedded_guidance_scale"]) == (6.0, "system")
    assert row.result["steps"] == 3

    row = sqlite_store.get_task(explicit)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    values, tiers = row.result["parameters"], row.result["parameter_sources"]
    assert (values["negative_prompt"], tiers["negative_prompt"]) == ("", "task")  # said explicitly: it wins
    assert (values["guidance_scale"], tiers["guidance_scale"]) == (2.0, "task")

    # --debug: one resolution table per generation, and no second, disagreeing resolution in the engine
    events = log_events(result.stderr)
    tables = [e for e in events if e.get("event") == "parameters_resolved"]
    assert len(tables) == 2
    line = next(text for text in tables[0]["table"].splitlines() if text.startswith("negative_prompt"))
    assert "model" in line and "'blurry'" in line
    assert not [e for e in events if e.get("event") in {"parameter_resolved", "parameter_tier"}]


def test_unused_params_are_listed_in_the_result_and_logged_as_warnings(sqlite_store, tmp_path):
    task_id = sqlite_store.add_task(NewTask("t2v", {
        "model": "tiny_t2v", "prompt": "a cat", "colour_grade": "teal",
        "orchestrator_details": {"cfg_zero_star": True, "seed": 9},
    }))
    result = run_worker(sqlite_store.path, tmp_path / "out", "--once", timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.result["ignored_params"] == ["colour_grade", "orchestrator_details.cfg_zero_star"]
    assert row.result["seed"] == 9  # a nested key the engine uses is honoured
    warnings = [e for e in log_events(result.stderr) if e.get("event") == "params_ignored"]
    assert warnings and all(e["level"] == "warning" for e in warnings)
    assert "colour_grade" in warnings[0]["keys"]


@pytest.mark.parametrize(
    ("task_type", "params", "message"),
    [
        ("vace", {"model": "tiny_vace", "prompt": "x"}, "params.video_guide is required"),
        ("vace", {"model": "tiny_vace", "prompt": "x", "video_guide": "/nope/g.mp4"}, "file not found"),
        ("t2v", {"model": "tiny_t2v", "prompt": "x", "activated_loras": ["no_such_lora"]}, "'no_such_lora' not found"),
        ("t2v", {"model": "tiny_t2v", "prompt": "x", "video_prompt_type": "V"}, "takes no video_prompt_type"),
        ("vace", {"model": "tiny_vace", "prompt": "x", "video_guide": "/nope/g.mp4", "video_prompt_type": "VX"},
         "unknown letter(s) X"),
    ],
)
def test_a_row_that_fails_its_checks_never_loads_a_model(sqlite_store, tmp_path, task_type, params, message):
    task_id = sqlite_store.add_task(NewTask(task_type, params))
    result = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--worker", "checker", timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.FAILED and message in row.error_message, row.error_message
    [worker] = [w for w in sqlite_store.list_workers(alive_within_seconds=3600) if w.id == "checker"]
    assert worker.stats["model_loads"] == 0, worker.stats
    assert not [e for e in log_events(result.stderr) if e.get("event") == "model_loaded"]


def test_the_request_holds_only_what_the_task_gave_parsed_once():
    request = db_task_to_generation_task("t1", "t2v", {
        "model": "tiny_t2v", "prompt": "x", "steps": "4", "resolution": "48×32", "lora_names": "a, b",
        "lora_multipliers": "0.5 1;0",
    })
    assert dict(request.parameters) == {
        "prompt": "x", "num_inference_steps": 4, "resolution": (48, 32), "activated_loras": ("a", "b"),
        "loras_multipliers": ((0.5,), (1.0, 0.0)),
    }
    with pytest.raises(InvalidParams, match="num_inference_steps twice"):
        db_task_to_generation_task("t2", "t2v", {"prompt": "x", "steps": 4, "num_inference_steps": 5})


def test_resolution_records_the_tier_of_every_value_and_blames_a_broken_definition_on_its_operator():
    resolved = resolve({"num_inference_steps": 2, "negative_prompt": "blurry"},
                       parse_values({"num_inference_steps": 7, "prompt": "x"}))
    assert resolved.params.num_inference_steps == 7 and resolved.sources["num_inference_steps"] is Tier.TASK
    assert resolved.params.negative_prompt == "blurry" and resolved.sources["negative_prompt"] is Tier.MODEL
    assert resolved.sources["sample_solver"] is Tier.SYSTEM
    with pytest.raises(DefinitionError, match="model definition 'broken': settings.resolution must look like"):
        resolve({"resolution": "huge"}, parse_values({"prompt": "x"}), model_type="broken")


def test_a_broken_definition_fails_its_rows_as_the_operators_error(sqlite_store, tmp_path, monkeypatch):
    import json
    import shutil

    from source.engine.model_defs import load_model_def
    from source.engine.paths import defaults_dir
    from tests.generation.test_generation_tasks import run_worker_in_process

    folder = tmp_path / "defaults"
    shutil.copytree(defaults_dir(), folder)
    tiny = json.loads((folder / "tiny_t2v.json").read_text())
    (folder / "tiny_bad_settings.json").write_text(json.dumps({**tiny, "settings": {"resolution": "huge"}}))
    (folder / "tiny_no_arch.json").write_text(json.dumps({"weights": {"tiny": "wan_t2v"}}))
    monkeypatch.setenv("WGP_DEFAULTS_DIR", str(folder))
    with pytest.raises(DefinitionError, match="'tiny_no_arch' has no architecture"):
        load_model_def("tiny_no_arch")
    task_id = sqlite_store.add_task(NewTask("t2v", {"model": "tiny_bad_settings", "prompt": "x"}))
    run_worker_in_process(sqlite_store, tmp_path / "out")
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.FAILED
    assert row.error_message == ("model definition 'tiny_bad_settings': settings.resolution must look like "
                                 "'WIDTHxHEIGHT' (e.g. '832x480'), got 'huge'")
