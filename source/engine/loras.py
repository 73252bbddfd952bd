"""LoRA files per family folder, applied for one call through diffusers adapters and removed afterwards."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import structlog
import torch

from source.engine.params import LoraWeight
from source.engine.paths import loras_dir
from source.errors import InvalidParams

log = structlog.get_logger(__name__)

LORA_SUFFIXES = (".safetensors", ".sft")


def lora_folder(folder: str) -> Path:
    return loras_dir() / folder


def model_lora_folder(model_type: str) -> str:
    """The LoRA folder name of ``model_type``: its definition's, else its family's."""
    from source.engine.families import family_for
    from source.engine.model_defs import load_model_def

    definition = load_model_def(model_type)
    return definition.lora_folder or family_for(definition.architecture).lora_folder


def list_loras(folder: str) -> list[Path]:
    root = lora_folder(folder)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in LORA_SUFFIXES)


def resolve_lora(folder: str, name: str) -> Path:
    """A LoRA named by file name (with or without suffix) inside the family folder, never outside it."""
    available = {p.name: p for p in list_loras(folder)} | {p.stem: p for p in list_loras(folder)}
    if name not in available:
        known = ", ".join(sorted(p.name for p in list_loras(folder))) or "none"
        raise InvalidParams(f"LoRA {name!r} not found in {lora_folder(folder)}; available: {known}")
    return available[name]


def expert_components(pipe) -> tuple[str, ...]:
    """The denoisers a LoRA goes into: ``transformer`` (high noise) and, for two-expert pipelines,
    ``transformer_2`` (low noise)."""
    return tuple(name for name in ("transformer", "transformer_2") if getattr(pipe, name, None) is not None)


def adapter_weights(components: Sequence[str], weight: LoraWeight) -> dict[str, float]:
    """A per-phase weight spread over the pipeline's experts (one value = every expert)."""
    if len(weight) > 1 and len(components) < 2:
        raise InvalidParams(
            f"loras_multipliers {';'.join(map(str, weight))!r}: per-phase multipliers need a two-expert model"
        )
    return {name: weight[min(i, len(weight) - 1)] for i, name in enumerate(components)}


@contextmanager
def applied_loras(pipe, folder: str, names: Sequence[str], weights: Sequence[LoraWeight]) -> Iterator[None]:
    """Load ``names`` with ``weights`` for the duration of the block; one call's LoRAs never leak."""
    if not names:
        yield
        return
    paths = [resolve_lora(folder, name) for name in names]
    components = expert_components(pipe)
    per_adapter = [adapter_weights(components, weight) for weight in weights]
    adapters = [f"wgp_{i}_{p.stem}" for i, p in enumerate(paths)]
    try:
        for path, adapter in zip(paths, adapters, strict=True):
            for component in components:
                pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter,
                                       **({"load_into_transformer_2": True} if component == "transformer_2" else {}))
        pipe.set_adapters(adapters, adapter_weights=per_adapter)
        for component in components:
            _lora_layers_in_compute_dtype(getattr(pipe, component))
        log.info("loras_applied", loras=[p.name for p in paths], weights=per_adapter)
        yield
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
