"""Random-weight Wan 2.1 T2V pipelines at the real 1.3B and 14B sizes (and a CPU-sized "smoke" one).

Each is written once as a diffusers folder, so benchmarks load it through the real ``from_pretrained`` path,
and described by a model definition the engine reads from ``WGP_DEFAULTS_DIR``. Prebuild both real sizes
(55 GB of weights to load, 43 GB on disk: the UMT5-XXL encoder and the VAE, the same in both, are stored once
and hard-linked into each folder):

    python benchmarks/gpu/real_size.py --size 1.3B --size 14B --root /tmp/wan-random
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.gpu.common import device, root_option  # noqa: E402
from source.engine.tiny import _t5_tokenizer  # noqa: E402

PREFIX = "wan-t2v-"

_WAN_TRANSFORMER = dict(
    patch_size=(1, 2, 2), attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096, freq_dim=256,
    cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)
# AutoencoderKLWan's defaults are the released Wan 2.1 VAE; spelled out so a diffusers change cannot shrink it.
_WAN_VAE = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True])
_UMT5_XXL = dict(
    vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, relative_attention_max_distance=128,
)


def _shipped_settings(model_type: str) -> dict[str, Any]:
    """Settings of a definition shipped in the repo's defaults/ (parents first), whatever WGP_DEFAULTS_DIR says."""
    raw = json.loads((ROOT / "defaults" / f"{model_type}.json").read_text())
    parent = raw.get("parent") or raw.get("inherits")
    return {**(_shipped_settings(parent) if parent else {}), **raw.get("settings", {})}


@dataclass(frozen=True)
class Size:
    transformer: Mapping[str, Any]  # WanTransformer3DModel arguments
    vae: Mapping[str, Any]  # AutoencoderKLWan arguments
    text_encoder: Mapping[str, Any]  # UMT5Config arguments
    settings: Mapping[str, Any]  # generation settings for the model definition
    dtype: torch.dtype


SIZES: dict[str, Size] = {
    # The real models' settings (832x480, 81 frames, their flow shifts) come from their shipped definitions.
    "1.3B": Size({**_WAN_TRANSFORMER, "num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30},
                 _WAN_VAE, _UMT5_XXL, _shipped_settings("t2v_1.3B"), torch.bfloat16),
    "14B": Size({**_WAN_TRANSFORMER, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40},
                _WAN_VAE, _UMT5_XXL, _shipped_settings("t2v"), torch.bfloat16),
    # As source/engine/tiny.py's Wan: seconds on a CPU. float32, as half precision on CPU is slow.
    "smoke": Size(
        {**_WAN_TRANSFORMER, "num_attention_heads": 2, "attention_head_dim": 12, "ffn_dim": 32, "num_layers": 2,
         "text_dim": 32, "rope_max_seq_len": 32},
        dict(_WAN_VAE, base_dim=3, dim_mult=[1, 1, 1, 1], num_res_blocks=1),
        dict(vocab_size=128, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4),
        {"resolution": "64x64", "video_length": 9, "num_inference_steps": 2, "guidance_scale": 5.0,
         "flow_shift": 3.0, "sample_solver": "unipc", "negative_prompt": "blurry"},
        torch.float32,
    ),
}
# Identical in both real sizes, so stored once per root and hard-linked into each folder (saves ~12 GB).
_SHARED = ("text_encoder", "vae")


def settings_for(size: str) -> dict[str, Any]:
    """The generation settings every benchmark uses for ``size`` (resolution, frames, steps, CFG, shift)."""
    return dict(SIZES[size].settings)


def folder_for(size: str, root: Path) -> Path:
    return Path(root) / f"{PREFIX}{size}"


def component_builders(size: str) -> dict[str, Callable[[], torch.nn.Module]]:
    """Constructors of ``size``'s weighted components, built on whatever device and dtype are current."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    spec = SIZES[size]
    # Default init is enough: measured on the 1.3B, transformer outputs stay near std 0.6 at every timestep,
    # and the random UMT5-XXL's near std 1 (what a trained encoder's final RMS norm gives).
    return {
        "transformer": lambda: WanTransformer3DModel(**spec.transformer),
        "vae": lambda: AutoencoderKLWan(**spec.vae),
        "text_encoder": lambda: UMT5EncoderModel(UMT5Config(**spec.text_encoder)),
    }


@contextmanager
def building_on(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """New parameters are created on ``device`` in ``dtype``: a 14B model never exists in float32 or on the CPU."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def _save_module(make: Callable[[], torch.nn.Module], path: Path, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    with building_on(device(), dtype):
        module = make()
    module.save_pretrained(path)
    del module
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def _atomic_folder(final: Path) -> Iterator[Path]:
    """A temp folder next to ``final``, renamed into place on success: readers see no folder or a whole one."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # a concurrent builder won the race: keep its folder
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _shared_component(name: str, config: Mapping[str, Any], make: Callable[[], torch.nn.Module], root: Path,
                      dtype: torch.dtype) -> Path:
    key = json.dumps({"config": config, "dtype": str(dtype)}, sort_keys=True)
    store = root / ".shared" / f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    if not (store / "config.json").is_file():
        with _atomic_folder(store) as tmp:
            _save_module(make, tmp, dtype)
    return store


def _link_tree(source: Path, target: Path) -> None:
    shutil.copytree(source, target, copy_function=os.link)


def _write_pipeline(size: str, folder: Path, root: Path, dtype: torch.dtype) -> None:
    """What ``WanPipeline.save_pretrained`` writes, one component at a time, the shared ones linked."""
    from diffusers import UniPCMultistepScheduler, WanPipeline

    spec = SIZES[size]
    modules = component_builders(size)
    for name, make in modules.items():
        if name in _SHARED:
            _link_tree(_shared_component(name, getattr(spec, name), make, root, dtype), folder / name)
        else:
            _save_module(make, folder / name, dtype)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=spec.settings["flow_shift"])
    # model_index.json from a pipeline of weightless (meta) twins: the same classes, no memory.
    with building_on("meta", dtype):
        twins = {name: make() for name, make in modules.items()}
    # tiny.py's tokenizer knows a few words and every character: enough for prompts, and its ids index the
    # first rows of the real-size embedding (the vocabulary size, hence the weights, stay UMT5-XXL's).
    pipe = WanPipeline(tokenizer=_t5_tokenizer(), scheduler=scheduler, **twins)
    pipe.tokenizer.save_pretrained(folder / "tokenizer")
    pipe.scheduler.save_pretrained(folder / "scheduler")
    pipe.save_config(folder)


def build(size: str, root: Path, dtype: torch.dtype | None = None) -> Path:
    """``<root>/wan-t2v-<size>``, built first if missing; ``dtype`` defaults to the size's (bf16, smoke fp32)."""
    if size not in SIZES:
        raise KeyError(f"unknown size {size!r}; known: {', '.join(SIZES)}")
    root = Path(root)
    final = folder_for(size, root)
    if (final / "model_index.json").is_file():
        return final
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    # Fork the RNG so building never perturbs the caller's seed.
    with torch.random.fork_rng(devices=devices), _atomic_folder(final) as tmp:
        _write_pipeline(size, tmp, root, dtype or SIZES[size].dtype)
    return final


def size_of(folder: Path) -> str:
    size = Path(folder).name.removeprefix(PREFIX)
    if size not in SIZES:
        raise ValueError(f"{folder} is not a folder written by build() (expected {PREFIX}<size>)")
    return size


def write_definition(folder: Path, defaults_dir: Path, model_type: str, *, engine: dict | None = None,
                     settings: dict | None = None) -> str:
    """Write ``<defaults_dir>/<model_type>.json`` for the pipeline in ``folder``; returns ``model_type``."""
    size = size_of(folder)
    definition = {
        "name": f"Wan 2.1 T2V {size}, random weights (benchmarks)",
        "architecture": "wan_t2v",
        "weights": {"local": str(Path(folder).resolve())},
        "dtype": str(SIZES[size].dtype).removeprefix("torch."),
        "engine": engine or {},
        "settings": {**settings_for(size), **(settings or {})},
    }
    Path(defaults_dir).mkdir(parents=True, exist_ok=True)
    (Path(defaults_dir) / f"{model_type}.json").write_text(json.dumps(definition, indent=2) + "\n")
    return model_type


def smoke_definition(root: Path, defaults_dir: Path, model_type: str = "bench_warmup") -> str:
    """The smoke model's definition, for untimed warm-ups (imports, CUDA context) before real measurements."""
    return write_definition(build("smoke", root), defaults_dir, model_type)


def model_type_for(size: str, suffix: str = "") -> str:
    return f"random_t2v_{size}{suffix}"


@click.command()
@click.option("--size", "sizes", type=click.Choice(list(SIZES)), multiple=True, default=["1.3B", "14B"],
              show_default=True, help="Repeat for several sizes.")
@root_option
def main(sizes: tuple[str, ...], root: Path) -> None:
    defaults = root / "defaults"
    for size in sizes:
        folder = build(size, root)
        model_type = write_definition(folder, defaults, model_type_for(size))
        print(f"built {size}: {folder}; definition {model_type} in {defaults}")
    print(f"to run the worker on them: export WGP_DEFAULTS_DIR={defaults}")


if __name__ == "__main__":
    main()
