"""The WanGP-style engine surface, implemented on diffusers pipelines (see source/engine/).

    state = {"gen": {"file_list": [], "abort": False}}
    result = generate_video(state, "tiny_t2v", output_dir=Path("outputs"), prompt="a cat", seed=7)

The resident model lives in ``state["engine"]`` (created on first use), not in this module: two states
are two engines, and nothing here needs resetting between tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from source.engine.core import Engine, GenerationResult, ProgressCallback, default_settings
from source.engine.loras import list_loras, lora_folder, model_lora_folder
from source.engine.model_defs import ModelDefinition, list_model_types, load_model_def
from source.generation.conversion import db_task_to_generation_task
from source.generation.prepare import prepare
from source.task_files.fetch import engine_inputs

__all__ = [
    "GenerationResult", "generate_video", "get_default_settings", "get_lora_dir", "get_model_def", "list_model_types",
    "load_models", "setup_loras", "unload_model_if_needed", "engine_of",
]


log = structlog.get_logger(__name__)


def engine_of(state: dict) -> Engine:
    """The engine (and so the resident model) that belongs to ``state``."""
    engine = state.get("engine")
    if engine is None:
        engine = state["engine"] = Engine()
    return engine


def get_model_def(model_type: str) -> ModelDefinition:
    return load_model_def(model_type)


def get_default_settings(model_type: str) -> dict[str, Any]:
    """System defaults overridden by the model definition's settings (tiers 1 and 2 of 3)."""
    return default_settings(load_model_def(model_type))


def load_models(model_type: str, state: dict) -> bool:
    """Make ``model_type`` the resident pipeline of ``state``; True when it had to be loaded."""
    return engine_of(state).load(model_type)


def unload_model_if_needed(state: dict) -> None:
    if state.get("engine") is not None:
        state["engine"].unload()


def get_lora_dir(model_type: str) -> Path:
    """The folder holding ``model_type``'s LoRAs (``loras/<family>/`` unless the definition names one)."""
    return lora_folder(model_lora_folder(model_type))


def setup_loras(model_type: str) -> list[str]:
    """The LoRA files available to ``model_type`` (its family's ``loras/<folder>/``)."""
    return [path.name for path in list_loras(model_lora_folder(model_type))]


def generate_video(
    state: dict,
    model_type: str,
    *,
    output_dir: Path | str,
    progress_callback: ProgressCallback | None = None,
    **params: Any,
) -> GenerationResult:
    """Run one generation; each written file is appended to ``state["gen"]["file_list"]``.

    ``params`` are WanGP-style values (the task tier); system defaults and the model definition's settings
    fill the rest. ``state["gen"]["abort"]`` (or a callable ``state["gen"]["should_abort"]``) stops it at
    the next denoising step with TaskCancelled.
    """
    gen = state.setdefault("gen", {})
    gen.setdefault("file_list", [])
    should_abort: Callable[[], bool] = gen.get("should_abort") or (lambda: bool(gen.get("abort")))
    engine = engine_of(state)
    # The same edge and prepare stage as a db row (source/generation/prepare.py): aliases mapped, unknown keys
    # reported, every check before the model moves, the control video built, the three tiers resolved once.
    request = db_task_to_generation_task("direct", "generate_video", {**params, "model": model_type})
    prepared = prepare(request, engine_inputs(Path(output_dir), "direct"), box=engine.box, memory=engine.memory)
    result = engine.generate(model_type, prepared.resolved, output_dir=Path(output_dir),
                             progress=progress_callback, should_abort=should_abort, definition=prepared.definition)
    result = replace(result, ignored_params=prepared.ignored_params)
    gen["file_list"].extend(str(path) for path in result.paths)
    return result
