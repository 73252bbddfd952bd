"""WanGP-style single-file checkpoints (original Wan key layout) through the real worker: the same weights give
the same video as the diffusers folder; quantised and missing files fail the task with a message that says what
to do."""

from __future__ import annotations

import json
import shutil
import tempfile

import cv2
import numpy as np
import pytest
import torch

from source.db.models import NewTask, TaskStatus
from source.engine import tiny_checkpoints
from source.engine.loading.single_file import FileRef, effective_files, suggest_unquantised
from source.engine.model_defs import load_model_def
from source.engine.paths import REPO_ROOT
from tests.helpers import run_worker


@pytest.fixture
def row(guide_video) -> dict:
    return {"prompt": "a red cat dances on the beach", "seed": 7, "video_guide": str(guide_video)}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A WanGP-like ckpts/ folder holding the tiny Wan 2.2 VACE model as original-layout files."""
    folder = tmp_path_factory.mktemp("ckpts")
    tiny_checkpoints.write_wan_vace_2_2(folder)
    return folder


def frames(path) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    out = []
    while (read := capture.read())[0]:
        out.append(read[1])
    capture.release()
    return np.stack(out)


def run_rows(store, tmp_path, rows, *extra, env=None):
    # Priorities fix the claim order: each model is loaded fresh for the first row that names it.
    ids = [store.add_task(NewTask(task_type, params, priority=len(rows) - i))
           for i, (task_type, params) in enumerate(rows)]
    # the inputs live in pytest's temp folders: allowed as an input root, as a user would list theirs
    result = run_worker(store.path, tmp_path / "out", "--once", "--input-roots", tempfile.gettempdir(), *extra, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return [store.get_task(task_id) for task_id in ids]


def test_original_layout_files_load_to_exactly_the_weights_of_the_diffusers_folder(ckpts, monkeypatch):
    from diffusers import WanVACEPipeline

    from source.engine.loading.pipeline import load_pipeline

    monkeypatch.setenv("WGP_CKPTS_DIR", str(ckpts))
    folder = load_pipeline(load_model_def("tiny_vace_2_2"), WanVACEPipeline)
    files = load_pipeline(load_model_def("tiny_vace_2_2_ckpts"), WanVACEPipeline)
    assert files.config.boundary_ratio == folder.config.boundary_ratio == 0.875
    for component in ("transformer", "transformer_2", "vae", "text_encoder"):
        expected, loaded = getattr(folder, component).state_dict(), getattr(files, component).state_dict()
        assert loaded.keys() == expected.keys(), component
        assert all(torch.equal(loaded[k], expected[k]) for k in expected), component


def test_worker_pointed_at_a_ckpts_folder_generates_the_same_video_as_the_diffusers_folder(
        sqlite_store, tmp_path, ckpts, row):
    rows = run_rows(sqlite_store, tmp_path, [
        ("vace_22", {"model": "tiny_vace_2_2", **row}),
        ("vace_22", {"model": "tiny_vace_2_2_ckpts", **row}),
        ("vace_22", {"model": "tiny_vace_2_2_ckpts", **row, "seed": 8}),
    ], "--ckpts-dir", str(ckpts))
    for row in rows:
        assert row.status is TaskStatus.COMPLETE, row.error_message
    folder, files, other_seed = (frames(row.output_location) for row in rows)
    assert folder.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(files, folder)
    assert np.abs(other_seed.astype(int) - folder).mean() > 1, "the check must be able to see a difference"


def test_missing_checkpoint_fails_the_task_naming_the_file_and_the_folder(sqlite_store, tmp_path, row):
    empty = tmp_path / "empty-ckpts"
    empty.mkdir()
    [row] = run_rows(sqlite_store, tmp_path, [("vace_22", {"model": "tiny_vace_2_2_ckpts", **row})],
                     env={"WGP_CKPTS_DIR": str(empty)})
    assert row.status is TaskStatus.FAILED
    assert "tiny_wan2.2_text2video_high_mbf16.safetensors" in row.error_message
    assert str(empty) in row.error_message and "--ckpts-dir" in row.error_message


def _defaults_with(tmp_path, name: str, definition: dict):
    folder = tmp_path / "defaults"
    shutil.copytree(REPO_ROOT / "defaults", folder)
    (folder / f"{name}.json").write_text(json.dumps(definition))
    return folder


@pytest.mark.parametrize("quantised", ["name", "tensors"])
def test_quantised_checkpoint_is_refused_naming_the_file_and_the_file_to_use(sqlite_store, tmp_path, ckpts, row,
                                                                           quantised):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "ckpts"
    shutil.copytree(ckpts, folder)
    high = folder / tiny_checkpoints.WAN_VACE_2_2_FILES["high"]
    if quantised == "name":  # WanGP's quanto int8 file of the same expert
        name = "tiny_wan2.2_text2video_high_quanto_mbf16_int8.safetensors"
        high.rename(folder / name)
    else:  # an innocent name over quanto's packed tensors
        name = high.name
        tensors = load_file(str(high))
        tensors["blocks.0.self_attn.q.weight._data"] = tensors.pop("blocks.0.self_attn.q.weight").to(torch.int8)
        tensors["blocks.0.self_attn.q.weight._scale"] = torch.ones(1)
        save_file(tensors, str(high))
    definition = json.loads((REPO_ROOT / "defaults" / "tiny_vace_2_2_ckpts.json").read_text())
    definition["weights"]["files"]["transformer"][0] = name
    defaults = _defaults_with(tmp_path, "tiny_quantised", definition)
    [row] = run_rows(sqlite_store, tmp_path, [("vace_22", {"model": "tiny_quantised", **row})],
                     "--ckpts-dir", str(folder), env={"WGP_DEFAULTS_DIR": str(defaults)})
    assert row.status is TaskStatus.FAILED
    assert name in row.error_message and "quantised" in row.error_message
    assert "tiny_wan2.2_text2video_high_mbf16.safetensors" in row.error_message or quantised == "tensors"
    assert "bf16/fp16" in row.error_message


def test_wangp_quantised_names_suggest_their_bf16_files():
    assert suggest_unquantised("wan2.1_text2video_14B_quanto_mbf16_int8.safetensors") == \
        "wan2.1_text2video_14B_mbf16.safetensors"
    assert suggest_unquantised("flux1-dev_quanto_bf16_int8.safetensors") == "flux1-dev_bf16.safetensors"
    assert suggest_unquantised("models_t5_umt5-xxl-enc-quanto_int8.safetensors") == \
        "models_t5_umt5-xxl-enc-bf16.safetensors"


def test_wangp_ckpts_replace_the_hub_folder_only_when_every_file_is_present(tmp_path, monkeypatch):
    weights = load_model_def("t2v_2_2").weights
    assert weights.ckpts, "t2v_2_2 names WanGP's expert files"
    monkeypatch.setenv("WGP_CKPTS_DIR", str(tmp_path))
    assert effective_files(weights) == {}
    paths = [tmp_path / FileRef(entry).relative for entry in weights.ckpts.values()]
    for i, path in enumerate(paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        if i < len(paths) - 1:
            assert effective_files(weights) == {}, f"{i + 1} of {len(paths)} files must not replace the hub weights"
    assert effective_files(weights) == dict(weights.ckpts)


def test_builtin_loras_are_fused_into_both_experts_like_the_same_lora_asked_for_by_a_task(
        sqlite_store, tmp_path, ckpts, row):
    from tests.generation.tiny_lora import make_tiny_wan_lora

    lora = make_tiny_wan_lora(tmp_path / "lora-src", "tiny_accel", kind="wan_vace_2_2", seed=3)
    folder = tmp_path / "ckpts"
    shutil.copytree(ckpts, folder)
    shutil.copy(lora, folder / lora.name)
    (tmp_path / "loras" / "wan").mkdir(parents=True)
    shutil.copy(lora, tmp_path / "loras" / "wan" / lora.name)
    defaults = _defaults_with(tmp_path, "tiny_cocktail", {
        "parent": "tiny_vace_2_2_ckpts", "name": "tiny cocktail",
        "weights": {"loras": [{"file": lora.name, "multiplier": 0.5}]},
    })
    rows = run_rows(sqlite_store, tmp_path, [
        ("vace_22", {"model": "tiny_cocktail", **row}),
        ("vace_22", {"model": "tiny_vace_2_2_ckpts", **row, "activated_loras": ["tiny_accel"],
                     "loras_multipliers": "0.5"}),
        ("vace_22", {"model": "tiny_vace_2_2_ckpts", **row}),
        ("vace_22", {"model": "tiny_cocktail", **row, "activated_loras": ["tiny_accel"], "loras_multipliers": "0.5"}),
        ("vace_22", {"model": "tiny_cocktail", **row}),
    ], "--ckpts-dir", str(folder), env={"WGP_DEFAULTS_DIR": str(defaults), "WGP_LORA_DIR": str(tmp_path / "loras")})
    for done in rows:
        assert done.status is TaskStatus.COMPLETE, done.error_message
    fused, per_task, plain, fused_and_task, fused_again = (frames(done.output_location).astype(int) for done in rows)
    assert np.abs(fused - plain).mean() > 1, "the built-in LoRA must change the output"
    # Fused weights round differently in bf16 from a LoRA applied per call (raw frames differ by at most 1/255 at a
    # handful of values); the H.264 encode spreads that over a block, so the decoded videos are compared on
    # average, with a bound on the largest difference.
    assert np.abs(fused - per_task).mean() < 0.05 and np.abs(fused - per_task).max() <= 8, \
        "fused at load = the same LoRA applied per call"
    assert np.abs(fused_and_task - fused).mean() > 1, "a task's LoRA applies on top of the built-in one"
    np.testing.assert_array_equal(fused_again, fused)  # and unloading it leaves the built-in LoRA fused


def test_ltx_transformer_from_a_lightricks_style_file_with_configs_from_a_condition_pipeline_folder(
        tmp_path, monkeypatch):
    """The ltxv_13B shape: the transformer from one original-layout file, the rest from a diffusers folder
    published for LTXConditionPipeline, run by our LTXPipeline."""
    import wgp
    from source.engine.tiny import materialise

    folder = tmp_path / "ltx-condition-folder"
    shutil.copytree(materialise("ltxv"), folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "LTXConditionPipeline"}))
    for weights in (folder / "transformer").glob("*.safetensors"):
        weights.unlink()  # the folder gives the transformer's config only
    tiny_checkpoints.write_ltxv(tmp_path / "ckpts" / "tiny-ltxv-13b-dev.safetensors")
    defaults = _defaults_with(tmp_path, "tiny_ltxv_file", {
        "parent": "tiny_ltxv", "weights": {"local": str(folder), "files": {"transformer": "tiny-ltxv-13b-dev.safetensors"}},
    })
    monkeypatch.setenv("WGP_CKPTS_DIR", str(tmp_path / "ckpts"))
    monkeypatch.setenv("WGP_DEFAULTS_DIR", str(defaults))
    videos = []
    for model_type in ("tiny_ltxv", "tiny_ltxv_file"):
        result = wgp.generate_video({"gen": {"file_list": []}}, model_type, output_dir=tmp_path / model_type,
                                    prompt="a lighthouse at dusk", seed=3)
        videos.append(frames(result.paths[0]))
    assert videos[0].shape == (9, 32, 32, 3)
    np.testing.assert_array_equal(videos[1], videos[0])


def test_two_expert_files_over_a_one_expert_config_folder_make_a_two_expert_pipeline(tmp_path, ckpts, monkeypatch):
    """The vace_14B_2_2 shape: Wan 2.1 VACE configs (one transformer), Wan 2.2 experts from files."""
    from diffusers import WanVACEPipeline

    from source.engine.loading.pipeline import load_pipeline

    files = tiny_checkpoints.WAN_VACE_2_2_FILES
    defaults = _defaults_with(tmp_path, "tiny_vace_experts", {
        "parent": "tiny_vace", "weights": {"tiny": "wan_vace", "boundary_ratio": 0.875, "files": {
            "transformer": [files["high"], files["vace"]], "transformer_2": [files["low"], files["vace"]]}},
    })
    monkeypatch.setenv("WGP_CKPTS_DIR", str(ckpts))
    monkeypatch.setenv("WGP_DEFAULTS_DIR", str(defaults))
    experts = load_pipeline(load_model_def("tiny_vace_experts"), WanVACEPipeline)
    reference = load_pipeline(load_model_def("tiny_vace_2_2"), WanVACEPipeline)
    assert experts.config.boundary_ratio == 0.875
    for component in ("transformer", "transformer_2"):
        expected, loaded = getattr(reference, component).state_dict(), getattr(experts, component).state_dict()
        assert all(torch.equal(loaded[k], expected[k]) for k in expected), component


@pytest.mark.parametrize(("weights", "message"), [
    ({"files": {"transformer": "hf://DeepBeepMeep/file.safetensors"}}, "is not hf://owner/repo/path/to/file"),
    ({"files": {"vae": 3}}, "weights.files.vae must be a file name"),
    ({"loras": [{"file": "a.safetensors", "multiplier": "high"}]}, "weights.loras entries must be"),
])
def test_malformed_single_file_weights_name_the_definition_and_the_field(tmp_path, monkeypatch, weights, message):
    from source.errors import DefinitionError

    defaults = _defaults_with(tmp_path, "tiny_broken", {"parent": "tiny_vace_2_2", "weights": weights})
    monkeypatch.setenv("WGP_DEFAULTS_DIR", str(defaults))
    with pytest.raises(DefinitionError, match="model definition 'tiny_broken' is malformed") as info:
        load_model_def("tiny_broken")
    assert message in str(info.value)
