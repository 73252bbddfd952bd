"""LoRA files per family folder, applied for one call through diffusers adapters and removed afterwards."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import structlog

from source.engine.paths import loras_dir
from source.errors import InvalidParams

log = structlog.get_logger(__name__)

LORA_SUFFIXES = (".safetensors", ".sft")


def lora_folder(folder: str) -> Path:
    return loras_dir() / folder


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


@contextmanager
def applied_loras(pipe, folder: str, names: Sequence[str], weights: Sequence[float]) -> Iterator[None]:
    """Load ``names`` with ``weights`` for the duration of the block; one call's LoRAs never leak."""
    if not names:
        yield
        return
    paths = [resolve_lora(folder, name) for name in names]
    adapters = [f"wgp_{i}_{p.stem}" for i, p in enumerate(paths)]
    try:
        for path, adapter in zip(paths, adapters, strict=True):
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter)
        pipe.set_adapters(adapters, adapter_weights=list(weights))
        log.info("loras_applied", loras=[p.name for p in paths], weights=list(weights))
        yield
    finally:
        pipe.unload_lora_weights()
