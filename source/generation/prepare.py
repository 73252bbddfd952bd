"""The prepare stage of a generation: a typed ``GenerationRequest`` → ``PreparedGeneration`` (local files,
resolved parameters), before any model moves. WanOrchestrator.prepare (rows) and wgp.generate_video
(programmatic callers) both run it; it calls only the layers below it (engine, media, task files).

    1. the model's definition, loaded once, and what it takes (ModelCapabilities)
    2. the request against it: the VACE letters' inputs, the acceleration LoRAs and their settings, the three
       tiers (system defaults < model JSON ``settings`` < task) merged once
    3. check_request: every check the request must pass, before anything is fetched
    4. the files: LoRAs fetched into the model's folder, inputs as checked local files, the control video
    5. the fetched files take the place of the names the task gave (the tiers stay as merged)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import structlog

from source.engine.features import check_supported
from source.engine.model_defs import BoxOptions, ModelDefinition, load_model_def
from source.engine.params import GenerationParams, ResolvedParameters, parse_settings, resolve
from source.errors import InvalidParams
from source.generation.control_video import build_control_guide, select_vace_inputs
from source.generation.conversion import GenerationRequest
from source.model_memory import ModelMemory
from source.task_files.fetch import resolve_generation_files
from source.task_files.policy import TaskInputs

log = structlog.get_logger(__name__)

# width × height × frames × batch × steps of one generation call. Tiny random-weight models (tests, demos)
# are meant to be quick: their budget is about a minute of CPU. Real models: 20x a 720p, 81-frame,
# 50-step Wan video.
TINY_WORK_BUDGET = 20_000_000
FULL_WORK_BUDGET = 20_000_000_000

# The inputs only a VACE model takes.
VACE_INPUTS = ("video_guide", "video_mask", "video_guide2", "video_mask2", "video_prompt_type")


@dataclass(frozen=True)
class ModelCapabilities:
    vace: bool
    flux: bool
    image_to_video: bool
    two_experts: bool
    image_output: bool
    # VACE here takes one control stream: a second guide overlays the first and shares its weight.
    second_control_stream: bool = False

    @classmethod
    def of(cls, definition: ModelDefinition) -> ModelCapabilities:
        architecture = definition.architecture
        return cls(
            vace=architecture == "wan_vace",
            flux=architecture.startswith("flux"),
            image_to_video=architecture == "wan_i2v",
            two_experts=definition.settings.get("guidance2_scale") is not None,
            image_output=architecture.startswith("flux") or definition.settings.get("video_length") == 1,
        )


@dataclass(frozen=True)
class PreparedGeneration:
    """A request whose inputs are local files and whose parameters are resolved: only the GPU is left."""

    request: GenerationRequest
    resolved: ResolvedParameters
    ignored_params: tuple[str, ...]
    definition: ModelDefinition  # the one loaded for it: the engine loads the model from it


def prepare(request: GenerationRequest, inputs: TaskInputs, *, box: BoxOptions | None = None,
            memory: ModelMemory | None = None) -> PreparedGeneration:
    # 1. the definition, once
    definition = load_model_def(request.model, box)
    capabilities = ModelCapabilities.of(definition)
    # 2. the request against it (every tier counts: a model JSON may carry a guide or letters)
    given = {**parse_settings(definition.settings, request.model), **request.parameters}
    check_inputs_taken(request.model, capabilities, given, request.parameters)
    letters = given.get("video_prompt_type") or ""
    values, unused = select_vace_inputs(dict(request.parameters), letters, given)
    request = replace(request, parameters=MappingProxyType(values),
                      acceleration_loras=acceleration_loras(request, definition.architecture))
    request = _with_phase_loras(request, definition)  # the definition's own phase LoRAs, unless replaced
    values = dict(request.parameters)
    values = {**values, **_recommended(request)}
    resolved = resolve(definition.settings, values, model_type=request.model)
    # 3. every other check, before anything is fetched or any model moves
    check_request(definition, capabilities, request, resolved.params)
    # 4. the files
    request = _with_loras(request, inputs, definition)
    files = resolve_generation_files(request.parameters, inputs)
    files = build_control_guide(files, letters, inputs.work_dir, request.depth_model, memory)
    # 5. the fetched files (and LoRA names) in place of the task's own
    if files.keys() != values.keys() or any(values[key] is not value for key, value in files.items()):
        resolved = resolve(definition.settings, files, model_type=request.model)
    log.debug("parameters_resolved", model=request.model, table="\n" + resolved.table())
    return PreparedGeneration(request, resolved, tuple(sorted({*request.ignored_params, *unused})), definition)


def check_inputs_taken(model_type: str, caps: ModelCapabilities, given: Mapping[str, Any],
                       task: Mapping[str, Any]) -> None:
    """The inputs the model needs are there and it is given none it cannot take (before the VACE letters are
    read: they name inputs only a VACE model has)."""
    if caps.vace and not given.get("video_guide"):
        raise InvalidParams(f"model {model_type!r} is a VACE model: params.video_guide is required")
    if caps.image_to_video and not given.get("image_start"):
        raise InvalidParams(f"model {model_type!r} is image-to-video: params.image_start is required")
    if not caps.vace:
        for name in VACE_INPUTS:
            if task.get(name):
                raise InvalidParams(f"model {model_type!r} takes no {name} (not a VACE model)")
    if "control_net_weight2" in given and not caps.second_control_stream:
        raise InvalidParams(
            f"params.control_net_weight2: model {model_type!r} has no second control stream (video_guide2 "
            f"overlays the first guide and uses control_net_weight); leave control_net_weight2 out")


def check_request(definition: ModelDefinition, caps: ModelCapabilities, request: GenerationRequest,
                  params: GenerationParams) -> None:
    """What the resolved request asks of this model: its work within the model's budget, every feature it
    switches on one this model applies, every LoRA it names present. (The pipeline's own limits, which need
    its loaded config, are checked by the engine when it conforms the request.)"""
    check_work_budget(definition, params)
    check_supported(params, definition.architecture, image_output=caps.image_output)
    from source.engine.loras import definition_lora_folder, resolve_lora

    folder = definition_lora_folder(definition)
    for name in request.parameters.get("activated_loras") or ():
        resolve_lora(folder, name)  # a missing file fails here, not after a download or a model switch


def input_frames(architecture: str, params: GenerationParams) -> int:
    """Input pictures the model attends to beside the frames it makes, each at (at most) the output's size, the
    size the engine resizes them to first: Kontext's edited image, VACE's reference images."""
    if architecture == "flux_kontext":
        return 1
    if "vace" in architecture:
        return len(params.image_refs)
    return 0


def check_work_budget(definition: ModelDefinition, params: GenerationParams) -> None:
    """Refuse a generation whose frames (made and read) × pixels × steps exceed the model's budget (resolved
    values)."""
    width, height, frames = params.width, params.height, params.video_length
    steps, batch = params.num_inference_steps, params.batch_size
    budget = TINY_WORK_BUDGET if definition.weights.tiny else FULL_WORK_BUDGET
    inputs = input_frames(definition.architecture, params)
    work = width * height * (frames + inputs) * batch * steps
    if work > budget:
        counted = (f"({frames} frames + {inputs} input image{'s' if inputs > 1 else ''})" if inputs
                   else f"{frames} frames")
        raise InvalidParams(
            f"{width}x{height} x {counted} x {batch} batch x {steps} steps is {work:,} pixel-steps; "
            f"model {definition.model_type!r} allows at most {budget:,} per task"
        )


def acceleration_loras(request: GenerationRequest, architecture: str) -> tuple[str, ...]:
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


def _recommended(request: GenerationRequest) -> dict[str, Any]:
    if not request.acceleration_loras:
        return {}
    from source.generation.loras import recommended_settings

    return recommended_settings(request)


def _with_phase_loras(request: GenerationRequest, definition: ModelDefinition) -> GenerationRequest:
    if not definition.phase_loras:
        return request
    from source.generation.loras import with_model_phase_loras

    return with_model_phase_loras(request, definition.phase_loras)


def _with_loras(request: GenerationRequest, inputs: TaskInputs, definition: ModelDefinition) -> GenerationRequest:
    from source.engine.loras import definition_lora_folder, lora_folder  # torch: once generating
    from source.generation.loras import process_all_loras

    return process_all_loras(request, lora_folder(definition_lora_folder(definition)), inputs)
