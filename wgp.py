"""The WanGP-style engine surface, implemented on diffusers pipelines (see source/engine/).

    state = {"gen": {"file_list": [], "abort": False}}
    result = generate_video(state, "tiny_t2v", output_dir=Path("outputs"), prompt="a cat", seed=7)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from source.engine.core import Engine, GenerationResult, ProgressCallback, default_settings
from source.engine.families import family_for
from source.engine.loras import list_loras, lora_folder
from source.engine.model_defs import ModelDefinition, list_model_types, load_model_def

__all__ = [
    "GenerationResult", "generate_video", "get_default_settings", "get_lora_dir", "get_model_def", "list_model_types",
    "load_models", "setup_loras", "unload_model_if_needed", "engine",
]

engine = Engine()


def get_model_def(model_type: str) -> ModelDefinition:
    return load_model_def(model_type)


def get_default_settings(model_type: str) -> dict[str, Any]:
    """System defaults overridden by the model definition's settings (tiers 1 and 2 of 3)."""
    return default_settings(load_model_def(model_type))


def load_models(model_type: str) -> bool:
    """Make ``model_type`` the resident pipeline; True when it had to be loaded."""
    return engine.load(model_type)


def unload_model_if_needed(state: dict | None = None) -> None:
    engine.unload()


def get_lora_dir(model_type: str) -> Path:
    """The folder holding ``model_type``'s LoRAs (``loras/<family>/`` unless the definition names one)."""
    return lora_folder(lora_folder_name(model_type))


def lora_folder_name(model_type: str) -> str:
    definition = load_model_def(model_type)
    return definition.lora_folder or family_for(definition.architecture).lora_folder


def setup_loras(model_type: str) -> list[str]:
    """The LoRA files available to ``model_type`` (its family's ``loras/<folder>/``)."""
    return [path.name for path in list_loras(lora_folder_name(model_type))]


def generate_video(
    state: dict,
    model_type: str,
    *,
    output_dir: Path | str,
    progress_callback: ProgressCallback | None = None,
    **params: Any,
) -> GenerationResult:
    """Run one generation; each written file is appended to ``state["gen"]["file_list"]``.

    ``state["gen"]["abort"]`` (or a callable ``state["gen"]["should_abort"]``) stops it at the next
    denoising step with TaskCancelled.
    """
    gen = state.setdefault("gen", {})
    gen.setdefault("file_list", [])
    should_abort: Callable[[], bool] = gen.get("should_abort") or (lambda: bool(gen.get("abort")))
    result = engine.generate(model_type, params, output_dir=Path(output_dir), progress=progress_callback,
                             should_abort=should_abort)
    gen["file_list"].extend(str(path) for path in result.paths)
    return result
