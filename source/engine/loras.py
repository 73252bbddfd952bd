"""LoRA files per family folder, applied for one call through diffusers adapters and removed afterwards."""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch

from source.engine.params import LoraWeight
from source.engine.paths import lora_cache_dir, loras_dir
from source.errors import InputUnavailable, InvalidParams, ModelUnavailable

log = structlog.get_logger(__name__)

LORA_SUFFIXES = (".safetensors", ".sft")
CACHED_LORA = re.compile(r"sha256:(?P<digest>[0-9a-f]{64})(?::.*)?")
MAX_HEADER_BYTES = 100 * 2**20

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4,
                "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
# The prefixes a LoRA's tensor names start with in the formats diffusers converts for each family folder
# (diffusers/peft, the original checkpoints' names, kohya).
_COMMON_PREFIXES = ("transformer.", "diffusion_model.", "model.diffusion_model.", "base_model.model.", "lora_unet_")
FAMILY_LORA_PREFIXES = {
    "wan": (*_COMMON_PREFIXES, "transformer_2.", "blocks.", "lora_transformer_"),
    "flux": (*_COMMON_PREFIXES, "text_encoder.", "lora_te", "double_blocks.", "single_blocks.", "lora_transformer_"),
    "ltxv": (*_COMMON_PREFIXES, "transformer_blocks."),
    "hunyuan": (*_COMMON_PREFIXES, "transformer_blocks.", "single_transformer_blocks.", "double_blocks.",
                "single_blocks."),
}
_LORA_MARKERS = ("lora_A", "lora_B", "lora_down", "lora_up", "lora.down", "lora.up", "lora_mid", "alpha", ".diff",
                 "diff_b", "dora_scale")


def lora_folder(folder: str) -> Path:
    return loras_dir() / folder


def model_lora_folder(model_type: str) -> str:
    """The LoRA folder name of ``model_type``: its definition's, else its family's."""
    from source.engine.model_defs import load_model_def

    return definition_lora_folder(load_model_def(model_type))


def definition_lora_folder(definition) -> str:
    """The LoRA folder name of a loaded definition: its own, else its family's."""
    from source.engine.families import family_for

    return definition.lora_folder or family_for(definition.architecture).lora_folder


def model_lora_dir(model_type: str) -> Path:
    """The folder holding ``model_type``'s LoRAs (``loras/<family>/`` unless the definition names one)."""
    return lora_folder(model_lora_folder(model_type))


def list_loras(folder: str) -> list[Path]:
    root = lora_folder(folder)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in LORA_SUFFIXES)


def cached_lora_name(digest: str, label: str = "") -> str:
    """The name a content-addressed LoRA is activated by (``label``: the file it came from, for people)."""
    return f"sha256:{digest}:{label}" if label else f"sha256:{digest}"


def cached_lora(name: str, where: str = "") -> Path | None:
    """The LoRA cache's file for a content-addressed name (``sha256:<digest>[:<label>]``); None for any other
    name. The one lookup: a cached name whose file is gone fails here, with the same message everywhere."""
    cached = CACHED_LORA.fullmatch(name)
    if not cached:
        return None
    path = lora_cache_dir() / f"{cached['digest']}.safetensors"
    if not path.is_file():
        raise ModelUnavailable(f"{where}LoRA {name!r} is not in the LoRA cache (it may have been evicted); "
                               "submit it again")
    return path


def resolve_lora(folder: str, name: str) -> Path:
    """A LoRA named by file name (with or without suffix) inside the family folder, never outside it, or a
    content-addressed one (``sha256:<digest>``) from the LoRA cache."""
    if (path := cached_lora(name)) is not None:
        return path
    available = {p.name: p for p in list_loras(folder)} | {p.stem: p for p in list_loras(folder)}
    if name not in available:
        known = ", ".join(sorted(p.name for p in list_loras(folder))) or "none"
        raise InvalidParams(f"LoRA {name!r} not found in {lora_folder(folder)}; available: {known}")
    return available[name]


def check_lora_file(path: Path, folder: str, what: str) -> int:
    """The number of tensors in ``path``; InputUnavailable unless it is a well-formed safetensors file
    whose every tensor name is a LoRA tensor in a format the ``folder`` family loads. Reads the header
    only: a file that is not a LoRA never reaches torch."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise InputUnavailable(f"{what} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise InputUnavailable(f"{what} is not a safetensors file (header length {length} for {size} bytes)")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InputUnavailable(f"{what} is not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise InputUnavailable(f"{what} is not a safetensors file (header is not an object)")
    data_bytes = size - 8 - length
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if not tensors:
        raise InputUnavailable(f"{what} holds no tensors")
    prefixes = FAMILY_LORA_PREFIXES.get(folder, _COMMON_PREFIXES)
    for key, info in tensors.items():
        _check_tensor_entry(key, info, data_bytes, what)
        if not key.startswith(prefixes) or not any(marker in key for marker in _LORA_MARKERS):
            raise InputUnavailable(f"{what}: tensor {key[:120]!r} is not a LoRA tensor of a {folder} model")
    return len(tensors)


def _check_tensor_entry(key: str, info: object, data_bytes: int, what: str) -> None:
    bad = f"{what} is not a safetensors file (tensor {key[:120]!r}"
    if not isinstance(info, dict) or info.get("dtype") not in _DTYPE_BYTES:
        raise InputUnavailable(f"{bad} has no known dtype)")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InputUnavailable(f"{bad} has a bad shape)")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_bytes
            or offsets[1] - offsets[0] != math.prod(shape) * _DTYPE_BYTES[info["dtype"]]):
        raise InputUnavailable(f"{bad} points outside the file)")


def expert_components(pipe) -> tuple[str, ...]:
    """The denoisers a LoRA goes into: ``transformer`` (high noise) and, for two-expert pipelines,
    ``transformer_2`` (low noise)."""
    return tuple(name for name in ("transformer", "transformer_2") if getattr(pipe, name, None) is not None)


def adapter_weights(components: Sequence[str], weight: LoraWeight) -> dict[str, float]:
    """A per-phase weight spread over the pipeline's experts (one value = every expert), for a generation
    without guidance phases, where the phases are the experts (source/engine/phases.py for the others)."""
    if any(isinstance(w, tuple) for w in weight):
        raise InvalidParams(f"loras_multipliers {weight!r}: per-step ramps need guidance phases "
                            f"(guidance_phases / steps_per_phase / phase_config)")
    if len(weight) > len(components):
        shown = ";".join(f"{w:g}" for w in weight)
        raise InvalidParams(
            f"loras_multipliers {shown!r}: {len(weight)} phase multipliers need guidance_phases {len(weight)}"
            + ("" if len(components) > 1 or len(weight) > 2 else " (or a two-expert model)")
        )
    return {name: weight[min(i, len(weight) - 1)] for i, name in enumerate(components)}


@dataclass(frozen=True)
class AppliedLoras:
    """The adapters one call runs with; the phase driver changes their multipliers between steps."""

    pipe: Any
    adapters: tuple[str, ...]
    components: tuple[str, ...]

    def set_multipliers(self, multipliers: Sequence[float]) -> None:
        """Every expert's copy of each adapter at ``multipliers`` (one per adapter)."""
        if self.adapters:
            self.pipe.set_adapters(list(self.adapters), adapter_weights=[
                dict.fromkeys(self.components, float(m)) for m in multipliers])


@contextmanager
def applied_loras(pipe, folder: str, names: Sequence[str], weights: Sequence[LoraWeight]) -> Iterator[AppliedLoras]:
    """Load ``names`` with ``weights`` for the duration of the block; one call's LoRAs never leak."""
    components = expert_components(pipe)
    if not names:
        yield AppliedLoras(pipe, (), components)
        return
    paths = [resolve_lora(folder, name) for name in names]
    per_adapter = [adapter_weights(components, weight) for weight in weights]
    # torch module names may not contain "." (InScene-v1.0.safetensors is a real LoRA file name)
    adapters = [f"wgp_{i}_{p.stem.replace('.', '_')}" for i, p in enumerate(paths)]
    try:
        for path, adapter in zip(paths, adapters, strict=True):
            for component in components:
                pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter,
                                       **({"load_into_transformer_2": True} if component == "transformer_2" else {}))
        pipe.set_adapters(adapters, adapter_weights=per_adapter)
        for component in components:
            _lora_layers_in_compute_dtype(getattr(pipe, component))
        log.info("loras_applied", loras=[p.name for p in paths], weights=per_adapter)
        yield AppliedLoras(pipe, tuple(adapters), components)
    finally:
        pipe.unload_lora_weights()


def _lora_layers_in_compute_dtype(model: torch.nn.Module) -> None:
    """With fp8 weight storage (engine ``fp8``) peft creates the LoRA layers in float8 like their base layers,
    but runs them without the upcasting hooks; keep them in the dtype the rest of the model computes in."""
    compute = next((p.dtype for p in model.parameters() if p.dtype.itemsize > 1), None)
    if compute is None:
        return
    for module in model.modules():
        for name in ("lora_A", "lora_B"):
            layers = getattr(module, name, None)
            if not isinstance(layers, torch.nn.ModuleDict):
                continue
            for layer in layers.values():
                if any(p.dtype.itemsize == 1 for p in layer.parameters()):
                    layer.to(compute)
