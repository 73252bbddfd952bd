"""LoRAs from a db row to the pixels: they change the output, the multiplier scales the effect,
phases go to the right expert, and nothing leaks into the next task."""

from __future__ import annotations

import http.server
import threading
from functools import partial

import cv2
import numpy as np
import pytest

from source.db.models import NewTask, TaskStatus
from source.generation.loras import ACCELERATION_LORAS
from tests.generation.test_generation_tasks import run_worker_in_process
from tests.generation.tiny_lora import make_tiny_wan_lora

T2I = {"prompt": "a lighthouse at dusk", "seed": 5, "video_length": 1, "negative_prompt": ""}


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora-src")
    return {
        "style": make_tiny_wan_lora(folder, "style", seed=1),
        "style22": make_tiny_wan_lora(folder, "style22", kind="wan_t2v_2_2", seed=2),
    }


@pytest.fixture
def lora_dir(tmp_path, monkeypatch, lora_files):
    folder = tmp_path / "loras"
    (folder / "wan").mkdir(parents=True)
    for path in lora_files.values():
        (folder / "wan" / path.name).write_bytes(path.read_bytes())
    monkeypatch.setenv("WGP_LORA_DIR", str(folder))
    return folder


def run_rows(store, tmp_path, rows: list[tuple[str, dict]]) -> list:
    ids = [store.add_task(NewTask(task_type, params)) for task_type, params in rows]
    run_worker_in_process(store, tmp_path / "out")
    return [store.get_task(task_id) for task_id in ids]


def image(row) -> np.ndarray:
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.output_location.endswith(".png")
    return cv2.imread(row.output_location).astype(np.float64)


def test_lora_changes_the_output_scaled_by_its_multiplier_and_never_leaks(sqlite_store, tmp_path, lora_dir):
    model = {"model": "tiny_t2v", **T2I}
    rows = run_rows(sqlite_store, tmp_path, [
        ("t2v", model),
        ("t2v", {**model, "activated_loras": ["style"], "loras_multipliers": "1.0"}),
        ("t2v", {**model, "activated_loras": "style.safetensors", "loras_multipliers": [0.5]}),
        ("t2v", {**model, "activated_loras": ["style"], "loras_multipliers": "0"}),
        ("t2v", model),  # after three LoRA tasks: the plain model again
    ])
    base, full, half, zero, after = (image(row) for row in rows)
    effect_full, effect_half = np.abs(full - base).mean(), np.abs(half - base).mean()
    assert effect_full > 0.3 and (full != base).mean() > 0.2, "the LoRA at 1.0 must change the image"
    assert 0 < effect_half < effect_full
    np.testing.assert_array_equal(zero, base)
    np.testing.assert_array_equal(after, base)
    assert rows[1].result["loras"] == {"style": [1.0]}
    assert "loras" not in rows[4].result


def test_phase_multipliers_go_to_each_expert_of_a_two_expert_model(sqlite_store, tmp_path, lora_dir):
    model = {"model": "tiny_t2i_2_2", **T2I}
    rows = run_rows(sqlite_store, tmp_path, [
        ("wan_2_2_t2i", model),
        ("wan_2_2_t2i", {**model, "activated_loras": ["style22"], "loras_multipliers": "1.0;0"}),
        ("wan_2_2_t2i", {**model, "activated_loras": ["style22"], "loras_multipliers": "0;1.0"}),
        ("wan_2_2_t2i", {**model, "activated_loras": ["style22"], "loras_multipliers": "0;0"}),
        ("wan_2_2_t2i", {**model, "activated_loras": ["style22"], "loras_multipliers": "1.0"}),
    ])
    base, high_only, low_only, none, both = (image(row) for row in rows)
    np.testing.assert_array_equal(none, base)
    # With 2 steps the high-noise expert runs the first step only, so its LoRA moves fewer pixels.
    assert (high_only != base).mean() > 0.005
    for variant in (low_only, both):
        assert (variant != base).mean() > 0.1
    assert (high_only != low_only).mean() > 0.1 and (both != high_only).mean() > 0.1
    assert rows[1].result["loras"] == {"style22": [1.0, 0.0]}


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_additional_loras_by_path_and_url_match_the_same_lora_activated_by_name(
        sqlite_store, tmp_path, lora_dir, lora_files):
    served = tmp_path / "served"
    served.mkdir()
    (served / "remote.safetensors").write_bytes(lora_files["style"].read_bytes())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Files, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/remote.safetensors"
    try:
        model = {"model": "tiny_t2v", **T2I}
        rows = run_rows(sqlite_store, tmp_path, [
            ("t2v", {**model, "activated_loras": ["style"], "loras_multipliers": "0.8"}),
            ("t2v", {**model, "additional_loras": {str(lora_files["style"]): 0.8}}),
            ("t2v", {**model, "additional_loras": {url: 0.8}}),
            ("t2v", {**model, "activated_loras": ["style"], "loras_multipliers": "0.8",
                     "additional_loras": {str(lora_files["style"]): 0.3}}),  # same file twice: first wins
        ])
    finally:
        server.shutdown()
    by_name, by_path, by_url, deduplicated = (image(row) for row in rows)
    np.testing.assert_array_equal(by_path, by_name)
    np.testing.assert_array_equal(by_url, by_name)
    np.testing.assert_array_equal(deduplicated, by_name)
    assert deduplicated.shape and rows[3].result["loras"] == {"style": [0.8]}
    # Rows' LoRAs went to the content-addressed cache, not into the shared family folder.
    assert sorted(p.name for p in (lora_dir / "wan").iterdir()) == sorted(p.name for p in lora_files.values())
    digests = [name.split(":")[1] for row in rows[1:3] for name in row.result["loras"]]
    assert len(digests) == 2 and digests[0] == digests[1]  # the path and the URL held the same bytes


def test_acceleration_lora_applies_its_recommended_settings_and_fails_clearly_when_missing(
        sqlite_store, tmp_path, lora_dir, lora_files, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    causvid = ACCELERATION_LORAS["causvid"]
    model = {"model": "tiny_t2v", **T2I}
    missing = run_rows(sqlite_store, tmp_path, [("t2v", {**model, "use_causvid_lora": True})])[0]
    assert missing.status is TaskStatus.FAILED
    assert causvid.filename in missing.error_message and "use_causvid_lora" in missing.error_message
    assert "HF_HUB_OFFLINE" in missing.error_message

    (lora_dir / "wan" / causvid.filename).write_bytes(lora_files["style"].read_bytes())
    defaults, explicit = run_rows(sqlite_store, tmp_path, [
        ("t2v", {**model, "use_causvid_lora": True}),
        ("t2v", {**model, "use_causvid_lora": True, "steps": 2}),
    ])
    assert defaults.status is TaskStatus.COMPLETE, defaults.error_message
    assert defaults.result["steps"] == causvid.recommended["num_inference_steps"]
    assert defaults.result["loras"] == {causvid.filename: [0.7]}
    assert explicit.result["steps"] == 2  # the task's own value is never overridden


@pytest.mark.parametrize(("params", "message"), [
    ({"activated_loras": ["nope"]}, "LoRA 'nope' not found"),
    ({"activated_loras": ["style"], "loras_multipliers": "1;0"}, "2 phase multipliers need guidance_phases 2 (or a two-expert model)"),
    ({"activated_loras": ["style"], "loras_multipliers": "1 2"}, "2 values for 1 activated_loras"),
    ({"additional_loras": {"ftp://host/x.safetensors": 1}}, "scheme 'ftp' is not allowed"),
    ({"additional_loras": {"/no/such/lora.safetensors": 1}}, "LoRA file not found"),
    ({"additional_loras": ["x"]}, "additional_loras must be an object"),
])
def test_bad_lora_requests_fail_the_task_with_a_specific_error(sqlite_store, tmp_path, lora_dir, params, message):
    row = run_rows(sqlite_store, tmp_path, [("t2v", {"model": "tiny_t2v", **T2I, **params})])[0]
    assert row.status is TaskStatus.FAILED
    assert message in row.error_message
