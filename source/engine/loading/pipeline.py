"""Weights → pipeline: hub snapshot, local folder or tiny build, always ending in ``from_pretrained``; components
named in ``weights.files`` are built first from single-file checkpoints (source/engine/loading/single_file.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import structlog
import torch

from source.engine import tiny
from source.engine.loading.single_file import (
    FileRef,
    ckpts_notes,
    effective_files,
    file_refs,
    load_component,
    refuse_quantised_name,
)
from source.engine.model_defs import ModelDefinition, load_model_def
from source.errors import ModelUnavailable
from source.hub import fetch_cached, fetch_hub_file, fetch_hub_snapshot

log = structlog.get_logger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ModelUnavailable(f"unsupported dtype {name!r}; use one of {', '.join(_DTYPES)}") from None


def prefetch_command(definition: ModelDefinition) -> str:
    return f"tasks prefetch {definition.model_type}"


def _unavailable(definition: ModelDefinition, why: str) -> ModelUnavailable:
    source = definition.weights
    size = f"~{source.size_gb:g} GB" if source.size_gb else "size unknown"
    hf_cmd = f"hf download {source.repo}" + (f" --revision {source.revision}" if source.revision else "")
    return ModelUnavailable(
        f"weights for model_type {definition.model_type!r} (hub repo {source.describe()}, {size}) are not in the "
        f"local Hugging Face cache and {why}. On a connected machine run `{prefetch_command(definition)}` "
        f"(or `{hf_cmd}`) and copy the cache (HF_HOME) here."
    )


def _hub_snapshot(definition: ModelDefinition) -> Path:
    from diffusers import DiffusionPipeline

    source = definition.weights
    # DiffusionPipeline.download fetches only the files from_pretrained needs, not the whole repo.
    return fetch_cached(
        ("pipeline", source.repo or "", source.revision or ""),
        lambda local_only: DiffusionPipeline.download(source.repo, revision=source.revision,
                                                      local_files_only=local_only),
        lambda why: _unavailable(definition, why),
        repo=source.repo or "",
    )


def _config_snapshot(definition: ModelDefinition) -> Path:
    """The hub folder without the weights of the components that come from single files (their configs stay)."""
    source = definition.weights
    what = f"model_type {definition.model_type!r} configs"
    index = json.loads(fetch_hub_file(source.repo, "model_index.json", what=what, revision=source.revision)
                       .read_text())
    files = effective_files(source)
    from_folder = [name for name, entry in index.items()
                   if isinstance(entry, list) and entry[0] is not None and name not in files]
    patterns = ["model_index.json", "*config.json", "scheduler/*", "tokenizer*/*", *(f"{name}/*" for name in from_folder)]
    return fetch_hub_snapshot(source.repo, what=what, allow_patterns=patterns, revision=source.revision)


def weights_path(definition: ModelDefinition) -> Path:
    source = definition.weights
    if source.tiny:
        return tiny.materialise(source.tiny)
    if source.local:
        path = Path(source.local).expanduser()
        if not (path / "model_index.json").is_file():
            raise ModelUnavailable(f"model_type {definition.model_type!r}: no diffusers folder at {path}")
        return path
    notes = ckpts_notes(source)
    if notes:
        log.warning("wangp_checkpoints_not_used", model_type=definition.model_type, why=notes,
                    using=source.describe())
    if effective_files(source):
        try:
            return _config_snapshot(definition)
        except ModelUnavailable as exc:
            raise ModelUnavailable(f"{exc} `{prefetch_command(definition)}` fetches everything model_type "
                                   f"{definition.model_type!r} needs (configs, tokenizer and single files).") from exc
    return _hub_snapshot(definition)


def single_file_components(definition: ModelDefinition, folder: Path, dtype: torch.dtype) -> dict:
    """The components named in ``weights.files``, built from their checkpoints with ``folder``'s configs."""
    vae_dtype = definition.engine.vae_dtype
    components = {}
    for component, entry in effective_files(definition.weights).items():
        what = f"model_type {definition.model_type!r} {component}"
        paths = [ref.resolve(what) for ref in file_refs(entry, definition.weights.ckpts_dir)]
        component_dtype = torch_dtype(vae_dtype) if component == "vae" and vae_dtype else dtype
        components[component] = load_component(folder, component, paths, component_dtype)
    return components


def load_pipeline(definition: ModelDefinition, pipeline_class: type,
                  extra_components: Callable[[Path], dict] | None = None):
    """``extra_components``: the family's components built from the folder its own way (source/engine/families)."""
    path = weights_path(definition)
    # Tiny random weights stay float32: half precision on CPU is slow and adds nothing to a test.
    dtype = torch.float32 if definition.weights.tiny else torch_dtype(definition.dtype)
    vae_dtype = definition.engine.vae_dtype
    dtypes = {"default": dtype, "vae": torch_dtype(vae_dtype)} if vae_dtype else dtype
    log.info("pipeline_loading", model_type=definition.model_type, path=str(path), dtype=str(dtype),
             vae_dtype=vae_dtype or str(dtype))
    extra = {**(extra_components(path) if extra_components else {}), **single_file_components(definition, path, dtype)}
    if definition.weights.boundary_ratio is not None:
        extra["boundary_ratio"] = definition.weights.boundary_ratio
    pipe = pipeline_class.from_pretrained(path, dtype=dtypes, **extra)
    pipe.set_progress_bar_config(disable=True)
    fuse_builtin_loras(pipe, definition)
    return pipe


def fuse_builtin_loras(pipe, definition: ModelDefinition) -> None:
    """Fuse the definition's own LoRAs into every expert once, at load (WanGP's model ``loras``, e.g. the
    accelerators of a "cocktail"): they are part of the model, so a task's LoRAs apply on top of them."""
    if not definition.weights.loras:
        return
    from source.engine.loading.inventory import builtin_lora_folders
    from source.engine.loras import expert_components

    components = list(expert_components(pipe))
    also = builtin_lora_folders(definition)
    adapters, weights = [], []
    for i, (file, multiplier) in enumerate(definition.weights.loras):
        path = FileRef(file, definition.weights.ckpts_dir).resolve(f"model_type {definition.model_type!r} built-in LoRA",
                                                                   also=also)
        refuse_quantised_name(path, f"model_type {definition.model_type!r} built-in LoRA")
        adapter = f"builtin_{i}"
        for component in components:
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter,
                                   **({"load_into_transformer_2": True} if component == "transformer_2" else {}))
        adapters.append(adapter)
        weights.append(multiplier)
    pipe.set_adapters(adapters, adapter_weights=weights)
    pipe.fuse_lora(components=components, adapter_names=adapters)
    pipe.unload_lora_weights()  # the fused weights stay; the adapter layers go
    log.info("builtin_loras_fused", model_type=definition.model_type,
             loras=[Path(FileRef(f).relative).name for f, _ in definition.weights.loras], multipliers=weights)


def download(model_type: str) -> Path:
    """Prefetch a model's weights into the Hugging Face cache (run on a connected machine)."""
    definition = load_model_def(model_type)
    for component, entry in definition.weights.files.items():
        for ref in file_refs(entry, definition.weights.ckpts_dir):
            ref.resolve(f"model_type {model_type!r} {component}")
    for file, _ in definition.weights.loras:
        FileRef(file, definition.weights.ckpts_dir).resolve(f"model_type {model_type!r} built-in LoRA")
    if not definition.weights.repo or definition.weights.files:
        return weights_path(definition)
    path = _hub_snapshot(definition)
    log.info("weights_downloaded", model_type=model_type, repo=definition.weights.repo, path=str(path))
    return path
