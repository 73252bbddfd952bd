"""The LoRA folder is append-only for rows (issue #21, point 2). The probe: ``additional_loras`` naming a
local file called like a shared LoRA replaced the shared one (hard link failed, the copy overwrote), a
symlink named ``*.safetensors`` got its target linked into the folder, and URL LoRAs were kept whatever
their content, one file per query string. Now a row's LoRA is checked, then copied into the
content-addressed cache and activated by its hash; the family folder never changes."""

from __future__ import annotations

import functools
import json
import struct
from http.server import SimpleHTTPRequestHandler

import numpy as np
import pytest
from safetensors.numpy import save_file

from source.db.models import NewTask, TaskStatus
from source.generation.loras import ACCELERATION_LORAS
from tests.generation.test_generation_tasks import run_worker_in_process
from tests.generation.tiny_lora import make_tiny_wan_lora
from tests.hardening.boundary import snapshot, touched_outside
from tests.helpers import http_server

T2I = {"model": "tiny_t2v", "prompt": "a lighthouse", "seed": 5, "video_length": 1}
CAUSVID = ACCELERATION_LORAS["causvid"].filename


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    shared = tmp_path_factory.mktemp("shared-src")
    attacker = tmp_path_factory.mktemp("attacker")
    return {
        "shared": make_tiny_wan_lora(shared, "style", seed=1),
        "attacker": make_tiny_wan_lora(attacker, "style", seed=9, strength=5.0),
        "attacker_dir": attacker,
    }


@pytest.fixture
def folders(tmp_path, monkeypatch, loras):
    lora_root = tmp_path / "loras"
    (lora_root / "wan").mkdir(parents=True)
    (lora_root / "wan" / "style.safetensors").write_bytes(loras["shared"].read_bytes())
    monkeypatch.setenv("WGP_LORA_DIR", str(lora_root))
    rows_dir, elsewhere = tmp_path / "rows", tmp_path / "elsewhere"
    rows_dir.mkdir()
    elsewhere.mkdir()
    (rows_dir / CAUSVID).write_bytes(loras["attacker"].read_bytes())
    (rows_dir / "style.safetensors").write_bytes(loras["attacker"].read_bytes())
    (elsewhere / "secret.safetensors").write_bytes(loras["attacker"].read_bytes())
    (rows_dir / "evil.safetensors").symlink_to(elsewhere / "secret.safetensors")
    (rows_dir / "notes.safetensors").write_text("not a LoRA at all")
    save_file({"transformer.blocks.0.attn1.to_q.weight": np.zeros((4, 4), np.float32)},
              str(rows_dir / "full_weights.safetensors"))
    save_file({"text_model.encoder.layers.0.lora_A.weight": np.zeros((4, 4), np.float32)},
              str(rows_dir / "other_family.safetensors"))
    header = json.dumps({"transformer.blocks.0.attn1.to_q.lora_A.weight": {
        "dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}).encode()
    (rows_dir / "lying_header.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    return {"lora_root": lora_root, "wan": lora_root / "wan", "rows": rows_dir, "elsewhere": elsewhere,
            "cache": lora_root / ".cache" / "sha256"}


def run(store, tmp_path, rows: list[dict], folders) -> list:
    ids = [store.add_task(NewTask("t2v", {**T2I, **params})) for params in rows]
    run_worker_in_process(store, tmp_path / "out", input_roots=(folders["rows"], tmp_path / "served"))
    return [store.get_task(task_id) for task_id in ids]


def test_hostile_additional_loras_never_change_the_shared_lora_folder(sqlite_store, tmp_path, folders, loras):
    rows_dir = folders["rows"]
    hostile = [
        ({"additional_loras": {str(rows_dir / "style.safetensors"): 1.0}}, None),  # the shared "style"'s name
        ({"additional_loras": {str(rows_dir / CAUSVID): 1.0}}, None),  # the name use_causvid_lora resolves
        ({"additional_loras": {str(rows_dir / "evil.safetensors"): 1.0}}, "outside the allowed input folders"),
        ({"additional_loras": {str(rows_dir / "notes.safetensors"): 1.0}}, "is not a safetensors file"),
        ({"additional_loras": {str(rows_dir / "full_weights.safetensors"): 1.0}}, "is not a LoRA tensor of a wan"),
        ({"additional_loras": {str(rows_dir / "other_family.safetensors"): 1.0}}, "is not a LoRA tensor of a wan"),
        ({"additional_loras": {str(rows_dir / "lying_header.safetensors"): 1.0}}, "points outside the file"),
    ]
    before = snapshot(folders["wan"], folders["elsewhere"], rows_dir)
    done = run(sqlite_store, tmp_path, [params for params, _ in hostile] + [{"activated_loras": ["style"]}], folders)
    for row, (params, message) in zip(done, hostile, strict=False):
        if message is None:  # a valid LoRA: it runs, from the cache
            assert row.status is TaskStatus.COMPLETE, row.error_message
            assert all(name.startswith("sha256:") for name in row.result["loras"])
        else:
            assert row.status is TaskStatus.FAILED, params
            assert message in row.error_message, row.error_message
    assert touched_outside(before, snapshot(folders["wan"], folders["elsewhere"], rows_dir)) == []
    assert not (folders["wan"] / CAUSVID).exists()
    by_name = done[-1]
    assert by_name.status is TaskStatus.COMPLETE and by_name.result["loras"] == {"style": [1.0]}
    # The cache holds each LoRA under the hash of its own bytes, nothing else.
    import hashlib

    for path in folders["cache"].iterdir():
        assert path.name == f"{hashlib.sha256(path.read_bytes()).hexdigest()}.safetensors"


def test_url_loras_are_cached_once_by_content_within_a_size_budget(sqlite_store, tmp_path, folders, loras,
                                                                  monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    other = make_tiny_wan_lora(tmp_path / "src", "other", seed=3)
    (served / "style.safetensors").write_bytes(loras["attacker"].read_bytes())
    (served / "other.safetensors").write_bytes(other.read_bytes())
    size = other.stat().st_size
    monkeypatch.setenv("WGP_LORA_CACHE_BYTES", str(int(size * 1.5)))  # room for one LoRA
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    with http_server(handler) as url:
        rows = run(sqlite_store, tmp_path, [
            {"additional_loras": {f"{url}/style.safetensors?download=1": 0.5}},
            {"additional_loras": {f"{url}/style.safetensors?download=2&x=y": 0.5}},
        ], folders)
        assert all(row.status is TaskStatus.COMPLETE for row in rows), [r.error_message for r in rows]
        assert len(list(folders["cache"].glob("*.safetensors"))) == 1  # one file for both query strings
        assert sorted(p.name for p in folders["wan"].iterdir()) == ["style.safetensors"]

        later = run(sqlite_store, tmp_path, [{"additional_loras": {f"{url}/other.safetensors": 0.5}}], folders)[0]
    assert later.status is TaskStatus.COMPLETE, later.error_message
    cached = list(folders["cache"].glob("*.safetensors"))
    assert len(cached) == 1 and cached[0].read_bytes() == other.read_bytes()  # the older one was evicted
