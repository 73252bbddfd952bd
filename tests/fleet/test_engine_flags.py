"""Per-box engine flags (``--wgp-*`` and their WGP_* variables) override every model definition's ``engine``
section for one worker; the older worker's dead flags are accepted with a warning; ``.env`` is loaded."""

from __future__ import annotations

import subprocess
import sys

import pytest

from source.db.models import NewTask, TaskStatus
from source.engine.model_defs import load_model_def
from source.errors import InvalidParams
from tests.helpers import WORKER, _worker_env, log_events, run_worker

OVERRIDE_VARS = ("WGP_PROFILE", "WGP_ATTENTION_MODE", "WGP_COMPILE", "WGP_TRANSFORMER_DTYPE_POLICY",
                 "WGP_VAE_PRECISION")


@pytest.fixture(autouse=True)
def _no_inherited_overrides(monkeypatch):
    for name in OVERRIDE_VARS:
        monkeypatch.delenv(name, raising=False)


def test_environment_overrides_replace_the_definitions_engine_section(monkeypatch):
    plain = load_model_def("t2v")
    monkeypatch.setenv("WGP_PROFILE", "4")
    monkeypatch.setenv("WGP_ATTENTION_MODE", "sdpa")
    monkeypatch.setenv("WGP_COMPILE", "transformer")
    monkeypatch.setenv("WGP_TRANSFORMER_DTYPE_POLICY", "fp16")
    monkeypatch.setenv("WGP_VAE_PRECISION", "32")
    boxed = load_model_def("t2v")
    assert (boxed.engine.profile, boxed.engine.attention, boxed.engine.compile) == (4, "native", True)
    assert (boxed.dtype, boxed.engine.vae_dtype) == ("float16", "float32")
    # what the box does not override stays the definition's
    assert boxed.engine.batch_cfg == plain.engine.batch_cfg and boxed.settings == plain.settings


def test_empty_dtype_policy_keeps_the_definitions_dtype(monkeypatch):
    monkeypatch.setenv("WGP_TRANSFORMER_DTYPE_POLICY", "")
    assert load_model_def("t2v").dtype == "bfloat16"


def test_invalid_override_names_the_variable(monkeypatch):
    monkeypatch.setenv("WGP_PROFILE", "9")
    with pytest.raises(InvalidParams, match="WGP_PROFILE must be a memory profile 1..5"):
        load_model_def("t2v")


def test_worker_generates_with_the_profile_given_on_its_command_line(sqlite_store, tmp_path):
    task_id = sqlite_store.add_task(NewTask("t2v", {"model": "tiny_t2v", "prompt": "a cat", "seed": 1}))
    done = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--wgp-profile", "4", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sqlite_store.get_task(task_id).status is TaskStatus.COMPLETE
    events = log_events(done.stderr)
    assert {"event": "engine_overrides", "profile": 4}.items() <= next(
        e for e in events if e["event"] == "engine_overrides").items()
    plans = [e for e in events if e["event"] in ("offload_skipped", "memory_plan_applied")]
    assert plans and all(e["profile"] == 4 for e in plans)


def test_older_workers_dead_flags_warn_with_their_replacement_instead_of_failing(sqlite_store, tmp_path):
    done = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--wgp-boost", "1", "--wgp-preload", "1000",
                      "--wgp-mixed-precision", "0")
    assert done.returncode == 0, done.stderr[-2000:]
    warned = {e["flag"]: e["replaced_by"] for e in log_events(done.stderr) if e["event"] == "deprecated_flag_ignored"}
    assert set(warned) == {"--wgp-boost", "--wgp-preload", "--wgp-mixed-precision"}
    assert "--wgp-transformer-dtype-policy" in warned["--wgp-mixed-precision"]


def test_bad_flag_value_is_a_usage_error_naming_the_flag(sqlite_store, tmp_path):
    done = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--wgp-attention-mode", "warp-drive")
    assert done.returncode == 2
    assert "--wgp-attention-mode" in done.stderr and "warp-drive" in done.stderr


def test_dot_env_in_the_working_directory_is_loaded_but_never_beats_the_real_environment(sqlite_store, tmp_path):
    (tmp_path / ".env").write_text("WGP_PROFILE=5\nWGP_ATTENTION_MODE=sdpa\n")
    env = {**_worker_env(None), "WGP_PROFILE": "2"}
    done = subprocess.run([sys.executable, str(WORKER), "--db-file", str(sqlite_store.path), "--main-output-dir",
                           str(tmp_path / "out"), "--log-format", "json", "--once"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    overrides = next(e for e in log_events(done.stderr) if e["event"] == "engine_overrides")
    assert (overrides["profile"], overrides["attention"]) == (2, "native")


def test_flags_are_passed_down_to_the_engine_and_never_written_to_the_environment(tmp_path):
    """worker.py builds BoxOptions from --wgp-* / --ckpts-dir and hands them to the engine: the process
    environment stays as it was, and the engine's definitions carry the box's profile and checkpoint folder."""
    import os

    from source.engine.core import Engine
    from source.engine.loading.single_file import effective_files
    from source.engine.model_defs import BoxOptions
    from source.worker.engine_flags import apply_engine_flags

    overrides = apply_engine_flags({"engine_profile": "4", "engine_attention": "sdpa"})
    assert overrides == {"profile": 4, "attention": "native"}
    assert not {name for name in OVERRIDE_VARS if name in os.environ}
    box = BoxOptions(overrides=overrides, ckpts_dir=tmp_path)
    engine = Engine(box=box)
    engine.load("tiny_t2v")
    assert engine.resident.definition.engine.profile == 4
    assert load_model_def("tiny_t2v").engine.profile != 4  # the environment's definition is untouched
    weights = load_model_def("t2v_2_2", box).weights
    assert weights.ckpts_dir == tmp_path and effective_files(weights) == {}
    from source.engine.loading.single_file import FileRef

    for entry in weights.ckpts.values():
        path = tmp_path / FileRef(entry).relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert effective_files(weights) == dict(weights.ckpts)  # found in the box's folder, no WGP_CKPTS_DIR
