"""WanOrchestrator: the programmatic wrapper around ``wgp.generate_video``.

It knows the model definitions (capabilities without loading weights), resolves parameters in three
tiers (system defaults < model JSON < task params), checks model-specific needs before any GPU work,
and returns the files the engine appended to ``state["gen"]["file_list"]``.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

import wgp
from source.engine.core import GenerationResult, resolve_with_sources
from source.errors import InvalidParams
from source.inputs import engine_inputs, resolve_input
from source.lora_utils import process_all_loras
from source.task_conversion import GenerationTask
from source.task_limits import check_work_budget

log = structlog.get_logger(__name__)

FILE_PARAMS = ("video_guide", "video_mask", "video_guide2", "video_mask2", "image_start", "image_end")


@dataclass(frozen=True)
class ModelCapabilities:
    vace: bool
    flux: bool
    image_to_video: bool
    two_experts: bool
    image_output: bool


class WanOrchestrator:
    def __init__(self, output_dir: Path | str) -> None:
        self.output_dir = Path(output_dir)
        self.state: dict[str, Any] = {"gen": {"file_list": [], "abort": False}}

    # -- models --------------------------------------------------------------------------------------
    @property
    def current_model(self) -> str | None:
        return wgp.engine.model_type

    def load_model(self, model_type: str) -> bool:
        """Make ``model_type`` resident; True when it switched (the previous model is freed first)."""
        if self.current_model == model_type:
            return False
        if self.current_model is not None:
            self.unload_model()
        return wgp.load_models(model_type)

    def unload_model(self) -> None:
        wgp.unload_model_if_needed(self.state)
        gc.collect()

    @staticmethod
    def capabilities(model_type: str) -> ModelCapabilities:
        definition = wgp.get_model_def(model_type)
        architecture = definition.architecture
        return ModelCapabilities(
            vace=architecture == "wan_vace",
            flux=architecture.startswith("flux"),
            image_to_video=architecture == "wan_i2v",
            two_experts=definition.settings.get("guidance2_scale") is not None,
            image_output=architecture.startswith("flux") or definition.settings.get("video_length") == 1,
        )

    # -- parameters ----------------------------------------------------------------------------------
    def _resolve_parameters(self, model_type: str, task_params: Mapping[str, Any]) -> dict[str, Any]:
        """System defaults < model JSON settings < task params; task params are never overridden."""
        values, sources = resolve_with_sources(wgp.get_model_def(model_type), task_params)
        for key in sorted(values):
            log.debug("parameter_tier", name=key, tier=sources[key], value=str(values[key])[:80])
        return values

    def _validate(self, model_type: str, params: Mapping[str, Any]) -> None:
        caps = self.capabilities(model_type)
        if caps.vace and not params.get("video_guide"):
            raise InvalidParams(f"model {model_type!r} is a VACE model: params.video_guide is required")
        if caps.image_to_video and not params.get("image_start"):
            raise InvalidParams(f"model {model_type!r} is image-to-video: params.image_start is required")
        if not caps.vace and (params.get("video_guide") or params.get("video_mask")):
            raise InvalidParams(f"model {model_type!r} takes no video_guide/video_mask (not a VACE model)")

    # -- generation ----------------------------------------------------------------------------------
    def generate(
        self,
        model_type: str,
        prompt: str,
        *,
        progress: Callable[[int, int, str], None] | None = None,
        should_abort: Callable[[], bool] | None = None,
        output_dir: Path | None = None,
        **params: Any,
    ) -> GenerationResult:
        params = {**params, "prompt": prompt}
        self._validate(model_type, params)
        resolved = self._resolve_parameters(model_type, params)
        check_work_budget(model_type, resolved)
        self.load_model(model_type)
        self.state["gen"] = {"file_list": [], "should_abort": should_abort or (lambda: False)}
        result = wgp.generate_video(self.state, model_type, output_dir=output_dir or self.output_dir,
                                    progress_callback=progress, **resolved)
        if [str(p) for p in result.paths] != self.state["gen"]["file_list"]:
            raise RuntimeError("engine outputs and state file_list disagree")
        return result

    def generate_t2v(self, model_type: str, prompt: str, **params: Any) -> GenerationResult:
        if self.capabilities(model_type).vace or self.capabilities(model_type).flux:
            raise InvalidParams(f"model {model_type!r} is not a text-to-video model")
        return self.generate(model_type, prompt, **params)

    def generate_vace(self, model_type: str, prompt: str, *, video_guide: str, **params: Any) -> GenerationResult:
        if not self.capabilities(model_type).vace:
            raise InvalidParams(f"model {model_type!r} is not a VACE model")
        return self.generate(model_type, prompt, video_guide=video_guide, **params)

    def generate_flux(self, model_type: str, prompt: str, *, num_images: int = 1, **params: Any) -> GenerationResult:
        if not self.capabilities(model_type).flux:
            raise InvalidParams(f"model {model_type!r} is not a Flux model")
        return self.generate(model_type, prompt, video_length=num_images, **params)

    # -- the queue's entry point ---------------------------------------------------------------------
    def run_task(self, task: GenerationTask, *, progress=None, should_abort=None,
                 work_dir: Path | None = None) -> GenerationResult:
        task = process_all_loras(task, wgp.get_lora_dir(task.model))
        params = dict(task.parameters)
        work = work_dir or engine_inputs(self.output_dir, task.id)
        for name in FILE_PARAMS:
            if params.get(name):
                params[name] = str(resolve_input(params[name], name, work))
        if params.get("image_refs"):
            refs = params["image_refs"] if isinstance(params["image_refs"], list) else [params["image_refs"]]
            params["image_refs"] = [str(resolve_input(ref, "image_refs", work)) for ref in refs]
        prompt = params.pop("prompt")
        return self.generate(task.model, prompt, progress=progress, should_abort=should_abort, **params)
