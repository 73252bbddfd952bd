"""``tasks models``: every definition, where its weights come from, whether this box has them (Hugging Face cache
or checkpoint folder), their size and the memory profile they need."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from source.engine import tiny_checkpoints
from source.engine.loading.single_file import FileRef
from source.engine.model_defs import list_model_types, load_model_def
from source.engine.paths import REPO_ROOT


def run_models(tmp_path, *args: str, ckpts=None, hub_cache=None) -> dict[str, dict]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(hub_cache or tmp_path / "empty-hub-cache"),
           "WGP_CKPTS_DIR": str(ckpts or tmp_path / "empty-ckpts")}
    out = subprocess.run([sys.executable, "-m", "source.cli.tasks", "models", "--json", *args], cwd=REPO_ROOT,
                         env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    return {row["model_type"]: row for row in map(json.loads, out.splitlines())}


def cache_repo(hub_cache, repo: str, files: dict[str, bytes]) -> None:
    """A model in the Hugging Face cache layout (blobs, a snapshot of links to them, refs/main)."""
    root = hub_cache / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    for i, (name, data) in enumerate(files.items()):
        blob = root / "blobs" / f"{i:064x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = root / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)


def test_models_lists_every_definition_with_its_family_source_size_and_absence(tmp_path):
    rows = run_models(tmp_path, "--gpu-memory", "80")
    assert sorted(rows) == list_model_types()
    t2v = rows["t2v"]
    assert (t2v["family"], t2v["source"], t2v["present"], t2v["size_gb"]) == ("wan_t2v", "hub", "no", 80)
    assert t2v["missing"] == ["hub repo Wan-AI/Wan2.1-T2V-14B-Diffusers"]
    assert rows["ltxv_13B"]["source"] == "single-file"
    assert "hf://Lightricks/LTX-Video/ltxv-13b-0.9.8-dev.safetensors" in rows["ltxv_13B"]["missing"]
    assert (rows["tiny_t2v"]["source"], rows["tiny_t2v"]["present"], rows["tiny_t2v"]["profile"]) == ("tiny", "yes", 1)


@pytest.mark.parametrize(("gpu_gb", "profile"), [(141, 1), (48, 2), (24, 4)])
def test_models_names_the_memory_profile_a_two_expert_model_needs_on_this_gpu(tmp_path, gpu_gb, profile):
    assert run_models(tmp_path, "--gpu-memory", str(gpu_gb))["t2v_2_2"]["profile"] == profile


def test_wangp_checkpoints_and_cached_configs_show_a_model_as_present(tmp_path):
    ckpts, hub_cache = tmp_path / "ckpts", tmp_path / "hub"
    tiny_checkpoints.write_wan_vace_2_2(ckpts)
    weights = load_model_def("t2v_2_2").weights
    for entry in weights.ckpts.values():  # WanGP's four files for Wan 2.2 T2V (contents do not matter here)
        path = ckpts / FileRef(entry).relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    before = run_models(tmp_path, ckpts=ckpts, hub_cache=hub_cache)
    assert (before["tiny_vace_2_2_ckpts"]["source"], before["tiny_vace_2_2_ckpts"]["present"]) == ("single-file", "yes")
    assert (before["t2v_2_2"]["source"], before["t2v_2_2"]["present"]) == ("ckpts", "partial")
    assert before["t2v_2_2"]["missing"] == ["hub repo Wan-AI/Wan2.2-T2V-A14B-Diffusers"]

    cache_repo(hub_cache, "Wan-AI/Wan2.2-T2V-A14B-Diffusers", {"model_index.json": b"{}"})
    after = run_models(tmp_path, ckpts=ckpts, hub_cache=hub_cache)
    assert (after["t2v_2_2"]["present"], after["t2v_2_2"]["missing"]) == ("yes", [])
    # Without the checkpoints the same few cached bytes are not the 126 GB repo.
    cache_repo(hub_cache, "Wan-AI/Wan2.1-T2V-14B-Diffusers", {"model_index.json": b"{}"})
    assert run_models(tmp_path, hub_cache=hub_cache)["t2v"]["present"] == "partial"


def test_only_quantised_wangp_files_are_named_and_the_hub_weights_used(tmp_path):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    (ckpts / "wan2.1_text2video_14B_quanto_mbf16_int8.safetensors").write_bytes(b"x")
    t2v = run_models(tmp_path, ckpts=ckpts)["t2v"]
    assert t2v["source"] == "hub" and t2v["present"] == "no"
    assert ("WanGP checkpoints not used: wan2.1_text2video_14B_mbf16.safetensors: only the quantised "
            "wan2.1_text2video_14B_quanto_mbf16_int8.safetensors is here (diffusers cannot load it)") in t2v["missing"]
