"""Weights → pipeline: hub snapshot, local folder or tiny build, always ending in ``from_pretrained``."""

from __future__ import annotations

from pathlib import Path

import structlog
import torch

from source.engine import tiny
from source.engine.model_defs import ModelDefinition, load_model_def
from source.errors import ModelUnavailable
from source.hub import fetch_cached

log = structlog.get_logger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ModelUnavailable(f"unsupported dtype {name!r}; use one of {', '.join(_DTYPES)}") from None


def prefetch_command(definition: ModelDefinition) -> str:
    return f"python -m source.engine.download {definition.model_type}"


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
    )


def weights_path(definition: ModelDefinition) -> Path:
    source = definition.weights
    if source.tiny:
        return tiny.materialise(source.tiny)
    if source.local:
        path = Path(source.local).expanduser()
        if not (path / "model_index.json").is_file():
            raise ModelUnavailable(f"model_type {definition.model_type!r}: no diffusers folder at {path}")
        return path
    return _hub_snapshot(definition)


def load_pipeline(definition: ModelDefinition, pipeline_class: type):
    path = weights_path(definition)
    # Tiny random weights stay float32: half precision on CPU is slow and adds nothing to a test.
    dtype = torch.float32 if definition.weights.tiny else torch_dtype(definition.dtype)
    vae_dtype = definition.engine.vae_dtype
    dtypes = {"default": dtype, "vae": torch_dtype(vae_dtype)} if vae_dtype else dtype
    log.info("pipeline_loading", model_type=definition.model_type, path=str(path), dtype=str(dtype),
             vae_dtype=vae_dtype or str(dtype))
    pipe = pipeline_class.from_pretrained(path, dtype=dtypes)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def download(model_type: str) -> Path:
    """Prefetch a model's weights into the Hugging Face cache (run on a connected machine)."""
    definition = load_model_def(model_type)
    if not definition.weights.repo:
        return weights_path(definition)
    path = _hub_snapshot(definition)
    log.info("weights_downloaded", model_type=model_type, repo=definition.weights.repo, path=str(path))
    return path
