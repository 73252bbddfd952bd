"""WanOrchestrator: from a typed ``GenerationRequest`` to files, in two stages.

``prepare`` (no model switch, no GPU lock): check the request against the model's capabilities, translate
``video_prompt_type``, fetch LoRAs, fetch inputs, and resolve the three tiers (system defaults < model JSON
``settings`` < task) exactly once into typed engine parameters, each value recording its tier.
``run``: make the model resident and generate from the prepared parameters.

The engine (and so torch) is created on the first model load: a worker that only runs utility tasks
never imports it.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import structlog

from source.engine.features import check_supported
from source.engine.model_defs import BoxOptions, load_model_def
from source.engine.params import ResolvedParameters, parse_settings, resolve
from source.errors import InvalidParams
from source.generation.control_video import build_control_guide, select_vace_inputs
from source.generation.conversion import GenerationRequest, db_task_to_generation_task
from source.model_memory import ModelMemory
from source.task_files.fetch import engine_inputs, resolve_generation_files
from source.task_files.policy import TaskInputs
from source.worker.limits import check_work_budget

if TYPE_CHECKING:
    from source.engine.core import Engine, GenerationResult

log = structlog.get_logger(__name__)



@dataclass(frozen=True)
class ModelCapabilities:
    vace: bool
    flux: bool
    image_to_video: bool
    two_experts: bool
    image_output: bool
    # VACE here takes one control stream: a second guide overlays the first and shares its weight.
    second_control_stream: bool = False


@dataclass(frozen=True)
class PreparedGeneration:
    """A request whose inputs are local files and whose parameters are resolved: only the GPU is left."""

    request: GenerationRequest
    resolved: ResolvedParameters
    ignored_params: tuple[str, ...]


class WanOrchestrator:
    def __init__(self, output_dir: Path | str, *, engine: Engine | None = None, box: BoxOptions | None = None,
                 memory: ModelMemory | None = None) -> None:
        self.output_dir = Path(output_dir)
        self._engine = engine
        # The auxiliary models (depth, pose for control videos; RIFE in the engine) beside the resident model,
        # the engine's own when one is given.
        self.memory = memory if memory is not None else engine.memory if engine is not None else ModelMemory()
        # This box's engine options (worker.py's --wgp-*, --ckpts-dir), for the definitions it reads and the
        # engine it creates; None: the environment's.
        self.box = box if box is not None or engine is None else engine.box

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from source.engine.core import Engine

            self._engine = Engine(box=self.box, memory=self.memory)
        return self._engine

    # -- models --------------------------------------------------------------------------------------
    @property
    def current_model(self) -> str | None:
        return self._engine.model_type if self._engine is not None else None

    def load_model(self, model_type: str) -> bool:
        """Make ``model_type`` resident; True when it switched (the previous model is freed first)."""
        return self.engine.load(model_type)

    def unload_model(self) -> None:
        """Free the resident model and the auxiliary ones (after an out-of-memory error, on request)."""
        if self._engine is not None:
            self._engine.unload()
        self.memory.release_auxiliary("unload")
        gc.collect()

    def capabilities(self, model_type: str) -> ModelCapabilities:
        definition = load_model_def(model_type, self.box)
        architecture = definition.architecture
        return ModelCapabilities(
            vace=architecture == "wan_vace",
            flux=architecture.startswith("flux"),
            image_to_video=architecture == "wan_i2v",
            two_experts=definition.settings.get("guidance2_scale") is not None,
            image_output=architecture.startswith("flux") or definition.settings.get("video_length") == 1,
        )

    # -- stage 1: prepare (before the model lock) ----------------------------------------------------
    def prepare(self, request: GenerationRequest, *, inputs: TaskInputs) -> PreparedGeneration:
        definition = load_model_def(request.model, self.box)
        # 1. what the model takes (every tier counts: a model JSON may carry a guide or letters)
        given = {**parse_settings(definition.settings, request.model), **request.parameters}
        self._check_capabilities(request.model, given, request.parameters)
        # 2. which VACE inputs the video_prompt_type letters use
        letters = given.get("video_prompt_type") or ""
        values, unused = select_vace_inputs(dict(request.parameters), letters, given)
        # 3. LoRAs fetched into the model's folder, every name checked present
        request = self._with_loras(replace(
            request, parameters=MappingProxyType(values),
            acceleration_loras=self._acceleration_loras(request, definition.architecture)), inputs)
        # 4. inputs as local files (URLs downloaded, capped), the control video built from the guide
        values = resolve_generation_files(request.parameters, inputs)
        values = build_control_guide(values, letters, inputs.work_dir, request.depth_model, self.memory)
        # 5. the three tiers, once
        resolved = resolve(definition.settings, values, model_type=request.model)
        check_work_budget(request.model, resolved.params)
        check_supported(resolved.params, definition.architecture, image_output=self.capabilities(request.model).image_output)
        log.debug("parameters_resolved", model=request.model, table="\n" + resolved.table())
        return PreparedGeneration(request, resolved, tuple(sorted({*request.ignored_params, *unused})))

    @staticmethod
    def _with_loras(request: GenerationRequest, inputs: TaskInputs) -> GenerationRequest:
        from source.engine.loras import lora_folder, model_lora_folder, resolve_lora  # torch: once generating
        from source.generation.loras import process_all_loras

        folder = model_lora_folder(request.model)
        request = process_all_loras(request, lora_folder(folder), inputs)
        for name in request.parameters.get("activated_loras") or ():
            resolve_lora(folder, name)  # a missing file fails here, not after a model switch
        return request

    def _check_capabilities(self, model_type: str, given: dict[str, Any], task: Any) -> None:
        caps = self.capabilities(model_type)
        if caps.vace and not given.get("video_guide"):
            raise InvalidParams(f"model {model_type!r} is a VACE model: params.video_guide is required")
        if caps.image_to_video and not given.get("image_start"):
            raise InvalidParams(f"model {model_type!r} is image-to-video: params.image_start is required")
        if not caps.vace:
            for name in ("video_guide", "video_mask", "video_guide2", "video_mask2", "video_prompt_type"):
                if task.get(name):
                    raise InvalidParams(f"model {model_type!r} takes no {name} (not a VACE model)")
        if "control_net_weight2" in given and not caps.second_control_stream:
            raise InvalidParams(
                f"params.control_net_weight2: model {model_type!r} has no second control stream (video_guide2 "
                f"overlays the first guide and uses control_net_weight); leave control_net_weight2 out")

    @staticmethod
    def _acceleration_loras(request: GenerationRequest, architecture: str) -> tuple[str, ...]:
        """The acceleration and reward LoRAs are Wan 2.1 14B LoRAs: a task asking for one on another family
        is refused; the worker-wide --apply-reward-lora only applies where it can."""
        if not architecture.startswith("wan_"):
            if request.acceleration_loras:
                from source.generation.loras import ACCELERATION_LORAS

                flags = ", ".join(f"params.{ACCELERATION_LORAS[name].flag}" for name in request.acceleration_loras)
                raise InvalidParams(f"{flags}: a Wan LoRA, not supported by model {request.model!r} ({architecture})")
            if request.worker_reward_lora:
                log.info("reward_lora_skipped", model=request.model, reason=f"not a Wan model ({architecture})")
            return ()
        if request.worker_reward_lora and "reward" not in request.acceleration_loras:
            return (*request.acceleration_loras, "reward")
        return request.acceleration_loras

    # -- stage 2: run (under the model lock) ---------------------------------------------------------
    def run(self, prepared: PreparedGeneration, *, progress: Callable[[int, int, str], None] | None = None,
            should_abort: Callable[[], bool] | None = None, output_dir: Path | None = None) -> GenerationResult:
        result = self.engine.generate(prepared.request.model, prepared.resolved,
                                      output_dir=output_dir or self.output_dir, progress=progress,
                                      should_abort=should_abort)
        return replace(result, ignored_params=prepared.ignored_params)

    # -- programmatic use (WanGP-style keyword parameters) -------------------------------------------
    def generate(self, model_type: str, prompt: str, *, progress: Callable[[int, int, str], None] | None = None,
                 should_abort: Callable[[], bool] | None = None, output_dir: Path | None = None,
                 **params: Any) -> GenerationResult:
        # The same edge as a db row: aliases mapped, values parsed, unknown keys reported (never dropped silently).
        request = db_task_to_generation_task("direct", "generate_video", {**params, "prompt": prompt, "model": model_type})
        prepared = self.prepare(request, inputs=engine_inputs(output_dir or self.output_dir, "direct"))
        return self.run(prepared, progress=progress, should_abort=should_abort, output_dir=output_dir)

    def generate_t2v(self, model_type: str, prompt: str, **params: Any) -> GenerationResult:
        caps = self.capabilities(model_type)
        if caps.vace or caps.flux:
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
