"""The engine: one resident diffusers pipeline, and a generation path that reads top to bottom.

generate() takes parameters already resolved (source/engine/params.py: the three tiers, once):
1. make the model resident  2. check the parameters against the pipeline  3. set the solver  4. seed
5. build the call  6. run it with LoRAs and the step callback  7. write files.
"""

from __future__ import annotations

import gc
import secrets
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog
import torch

from source.engine.families import family_for
from source.engine.families.base import Family
from source.engine.guidance_variants import guidance_variant
from source.engine.loading.inventory import memory_need_gb
from source.engine.loading.pipeline import load_pipeline
from source.engine.loras import applied_loras
from source.engine.memory import apply_memory_plan, plan_for
from source.engine.model_defs import BoxOptions, ModelDefinition, load_model_def
from source.engine.nag import normalized_attention_guidance
from source.engine.overlap_noise import overlap_noise
from source.engine.params import GenerationParams, ResolvedParameters, Tier, resolve, value_of
from source.engine.phases import PhaseDriver, PhasePlan, guidance_phases, phase_plan_for
from source.engine.postprocess import postprocess, write_thumbnail
from source.engine.riflex import check as check_riflex
from source.engine.riflex import riflex
from source.engine.schedulers import SchedulerSwitcher
from source.engine.speed import apply_speed_options, reset_step_state
from source.engine.step_cache import check as check_step_cache
from source.engine.step_cache import step_cache
from source.engine.windows import fit_overlap, generate_windows, largest_length, needs_windows
from source.errors import CancelReason, TaskCancelled
from source.media.write import IMAGE_SUFFIXES, unique_path, write_image, write_soundtrack, write_video
from source.model_memory import ModelMemory

log = structlog.get_logger(__name__)

ProgressCallback = Callable[[int, int, str], None]
# Called at the end of every denoising step, inside the pipeline call (tests use it to inject failures
# that real hardware would need, e.g. a CUDA out-of-memory error).
StepHook = Callable[[GenerationParams, int], None]


@dataclass(frozen=True)
class GenerationResult:
    model_type: str
    paths: tuple[Path, ...]
    seed: int
    width: int
    height: int
    frames: int
    steps: int
    fps: int | None
    seconds: float
    parameter_sources: Mapping[str, str] = field(default_factory=dict)
    # The resolved values (JSON-safe), so a row's result shows what was generated and can be replayed.
    parameters: Mapping[str, Any] = field(default_factory=dict)
    # Params the task gave that nothing used (typos, fields of other task types): shown, never silent.
    ignored_params: tuple[str, ...] = ()
    loras: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    # Values rounded to what the model supports (param → requested, used).
    adjusted: Mapping[str, Any] = field(default_factory=dict)
    # First-frame JPEGs beside each video (source/engine/postprocess.py).
    thumbnails: tuple[Path, ...] = ()
    # WanGP features applied (post-processing, step cache, guidance variant), with their values.
    applied: Mapping[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        summary = {"model": self.model_type, "seed": self.seed, "resolution": f"{self.width}x{self.height}",
                   "frames": self.frames, "steps": self.steps, "fps": self.fps,
                   "generation_seconds": round(self.seconds, 3)}
        if self.parameters:
            summary["parameters"] = dict(self.parameters)
            summary["parameter_sources"] = dict(self.parameter_sources)
        if self.ignored_params:
            summary["ignored_params"] = list(self.ignored_params)
        if self.adjusted:
            summary["adjusted"] = dict(self.adjusted)
        if self.thumbnails:
            summary["thumbnail"] = str(self.thumbnails[0])
        summary.update(self.applied)
        if self.loras:
            summary["loras"] = {name: list(weight) for name, weight in self.loras.items()}
        return summary


@dataclass
class ResidentModel:
    definition: ModelDefinition
    family: Family
    pipe: Any
    schedulers: SchedulerSwitcher
    load_seconds: float


def default_settings(definition: ModelDefinition) -> dict[str, Any]:
    """Tiers 1 and 2 (system defaults < model JSON settings), as WanGP-style values."""
    resolved = resolve(definition.settings, {}, model_type=definition.model_type)
    return {name: value_of(resolved.params, name) for name in resolved.sources}


def component_dtypes(pipe: Any) -> dict[str, str]:
    """The dtype each weighted component of ``pipe`` holds its parameters in, as loaded (a benchmark and an
    operator see an upcast or a float32 text encoder at once)."""
    dtypes: dict[str, str] = {}
    for name, component in pipe.components.items():
        parameters = getattr(component, "parameters", None)
        first = next(parameters(), None) if callable(parameters) else None
        if first is not None:
            dtypes[name] = str(first.dtype).removeprefix("torch.")
    return dtypes


class Engine:
    def __init__(self, *, step_hooks: tuple[StepHook, ...] = (), box: BoxOptions | None = None,
                 memory: ModelMemory | None = None) -> None:
        self.resident: ResidentModel | None = None
        self.step_hooks = step_hooks
        self.box = box  # this box's --wgp-* / --ckpts-dir (None: the environment's)
        # The auxiliary models beside the resident one: freed before a load when memory is short.
        self.memory = memory if memory is not None else ModelMemory()

    @property
    def model_type(self) -> str | None:
        return self.resident.definition.model_type if self.resident else None

    # -- models --------------------------------------------------------------------------------------
    def load(self, model_type: str, definition: ModelDefinition | None = None) -> bool:
        """Make ``model_type`` resident; True when a load happened (False: it already was). ``definition``: the
        one the prepare stage loaded for it (loaded here when not given)."""
        if self.model_type == model_type:
            return False
        definition = definition if definition is not None else load_model_def(model_type, self.box)
        family = family_for(definition.architecture)
        self.unload()
        need_gb = memory_need_gb(definition)
        self.memory.make_room(None if need_gb is None else int(need_gb * 2**30), reason=f"loading {model_type}")
        started = time.monotonic()
        pipe = load_pipeline(definition, family.pipeline_class(), family.extra_components)
        apply_memory_plan(pipe, plan_for(definition.engine))
        apply_speed_options(pipe, definition.engine)
        self.resident = ResidentModel(definition, family, pipe, SchedulerSwitcher(pipe, family.solvers),
                                      time.monotonic() - started)
        log.info("model_loaded", model_type=model_type, seconds=round(self.resident.load_seconds, 3),
                 dtypes=component_dtypes(pipe))
        return True

    def unload(self) -> None:
        if self.resident is None:
            return
        model_type = self.model_type
        self.resident = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.info("model_unloaded", model_type=model_type)

    # -- generation ----------------------------------------------------------------------------------
    def generate(
        self,
        model_type: str,
        resolved: ResolvedParameters,
        *,
        output_dir: Path,
        progress: ProgressCallback | None = None,
        should_abort: Callable[[], bool] | None = None,
        definition: ModelDefinition | None = None,
    ) -> GenerationResult:
        started = time.monotonic()
        params = resolved.params
        # 1. the model
        if progress is not None and self.model_type != model_type:
            progress(0, 1, "loading")  # the row's phase: weights fetched if missing, then loaded
        self.load(model_type, definition)
        assert self.resident is not None
        resident = self.resident
        definition, family, pipe = resident.definition, resident.family, resident.pipe
        # 2. what this pipeline can produce: size and length rounded as WanGP rounds them, the rest checked
        #    (per window when the video is made of sliding windows: its total length is kept exact)
        windowed = needs_windows(params)
        params, adjusted = family.conform(pipe, params, exact_length=windowed)
        if windowed:
            params, overlap_adjusted = fit_overlap(params, definition.architecture)
            adjusted.update(overlap_adjusted)
        window = largest_length(params.sliding_window_size or 1, family.temporal_step(pipe))
        family.validate(pipe, replace(params, video_length=window) if windowed else params)
        check_step_cache(params, pipe)
        riflex_asked = resolved.sources.get("RIFLEx_setting", Tier.SYSTEM) is not Tier.SYSTEM
        if family.takes_riflex:
            check_riflex(params, pipe, family.fps, explicit=riflex_asked)
        # 3. solver and shift
        resident.schedulers.apply(params.sample_solver, params.flow_shift)
        #    and the guidance phases over this scheduler's timesteps (WanGP's switch thresholds or exact steps)
        plan = phase_plan_for(family, pipe, params)
        # 4. seed (-1: a fresh one, recorded so the output can be reproduced)
        seed = params.seed if params.seed >= 0 else secrets.randbits(31)
        generator = torch.Generator("cpu").manual_seed(seed)
        # 5-6. the call(s), with this generation's LoRAs, step cache and guidance variant only
        applied: dict[str, Any] = {}
        with torch.inference_mode(), applied_loras(pipe, definition.lora_folder or family.lora_folder,
                                                   params.activated_loras, _first_weights(plan, params)) as loras, \
                guidance_phases(pipe, plan, loras, params) as phases, \
                step_cache(pipe, params, definition.architecture, definition.teacache_coefficients) as cache_report, \
                _riflex(family, pipe, params, riflex_asked) as riflex_report, \
                guidance_variant(pipe, params) as guidance_report, \
                normalized_attention_guidance(pipe, params) as nag_report:
            if windowed:
                temporal_step = family.temporal_step(pipe)
                noised: list[int] = []

                def run_window(window: GenerationParams, index: int, count: int, continued: int) -> Any:
                    def window_progress(step: int, total: int, message: str) -> None:
                        if progress is not None:
                            progress(index * total + step, count * total, f"window {index + 1}/{count}: {message}")
                    with overlap_noise(pipe, window, continued, temporal_step, seed + index) as latent_frames:
                        noised.append(latent_frames)
                        return family.outputs(self._call(pipe, family, definition, window, generator,
                                                         window_progress, should_abort, phases))[0]

                frames, applied["sliding_windows"] = generate_windows(params, definition.architecture,
                                                                      temporal_step, run_window)
                if params.sliding_window_overlap_noise > 0:
                    applied["sliding_windows"]["overlap_noise"] = {
                        "strength": params.sliding_window_overlap_noise, "latent_frames_noised": noised}
                arrays, sounds = [frames], [None]
            else:
                called = self._call(pipe, family, definition, params, generator, progress, should_abort, phases)
                arrays, sounds = family.finish(family.outputs(called), params), family.soundtracks(pipe, called)
        total = params.num_inference_steps
        if progress is not None:
            progress(total, total, "encoding")
        # 7. post-processing (WanGP's upsampling and grain), files and thumbnails
        output_dir.mkdir(parents=True, exist_ok=True)
        fps = family.fps if family.is_video else None
        processed = [postprocess(array, params, fps, seed, self.memory) for array in arrays]
        paths = tuple(self._write(family, p.frames, output_dir, model_type, p.fps, params.output_format)
                      for p in processed)
        for path, sound in zip(paths, sounds, strict=True):
            if sound is not None and path.suffix == ".mp4":
                write_soundtrack(path, *sound)
                applied["audio"] = {"sample_rate": sound[1], "channels": int(sound[0].shape[0]),
                                    "seconds": round(sound[0].shape[1] / sound[1], 3)}
        thumbnails = tuple(write_thumbnail(p.frames[0], path) for p, path in zip(processed, paths, strict=True)
                           if path.suffix == ".mp4")
        last = processed[-1].frames
        height, width = last.shape[-3:-1]
        result = GenerationResult(
            model_type=model_type, paths=paths, seed=seed, width=width, height=height,
            frames=last.shape[0] if last.ndim == 4 else family.frame_count(params), steps=total,
            fps=processed[-1].fps, seconds=time.monotonic() - started, thumbnails=thumbnails,
            applied={**applied, **({"postprocessing": processed[-1].applied} if processed[-1].applied else {}),
                     **({"step_cache": cache_report} if cache_report else {}),
                     **({"riflex": riflex_report} if riflex_report else {}),
                     **({"guidance": guidance_report} if guidance_report else {}),
                     **({"normalized_attention_guidance": nag_report} if nag_report else {}),
                     **({"phases": phases.report(params.activated_loras)} if phases else {})},
            parameter_sources={name: tier.value for name, tier in resolved.sources.items()},
            parameters=resolved.json_values(),
            loras=dict(zip(params.activated_loras, params.loras_multipliers, strict=True)),
            adjusted=adjusted,
        )
        log.info("generation_finished", model_type=model_type, files=[p.name for p in paths], seed=seed,
                 seconds=round(result.seconds, 3))
        return result

    def _call(self, pipe, family: Family, definition: ModelDefinition, params: GenerationParams,
              generator: torch.Generator, progress: ProgressCallback | None,
              should_abort: Callable[[], bool] | None = None, phases: PhaseDriver | None = None):
        kwargs: dict[str, Any] = {
            "prompt": params.prompt,
            "height": params.height,
            "width": params.width,
            "num_inference_steps": params.num_inference_steps,
            "generator": generator,
            "output_type": "np",
            "callback_on_step_end": _step_callback(params, progress, should_abort, self.step_hooks, phases),
            **family.call_kwargs(pipe, params),
            **dict(definition.pipeline_kwargs),
            **(phases.call_kwargs() if phases else {}),
        }
        if family.is_video and params.batch_size > 1:
            kwargs["num_videos_per_prompt"] = params.batch_size
        run = family.runner(pipe, kwargs)
        try:
            with family.call_context(pipe, params):
                return run(**kwargs)
        finally:
            reset_step_state(pipe)

    @staticmethod
    def _write(family: Family, array, output_dir: Path, stem: str, fps: int | None, image_format: str) -> Path:
        if family.is_video and array.ndim == 4 and array.shape[0] > 1:
            return write_video(array, unique_path(output_dir, stem, ".mp4"), fps or family.fps)
        frame = array[0] if array.ndim == 4 else array
        return write_image(frame, unique_path(output_dir, stem, IMAGE_SUFFIXES[image_format]))


def _riflex(family: Family, pipe, params: GenerationParams, asked: bool):
    """RIFLEx where the family's transformers take it (Wan); the others refuse a request in the prepare
    stage (source/engine/features.py)."""
    return riflex(pipe, params, family.fps, explicit=asked) if family.takes_riflex else nullcontext(None)


def _first_weights(plan: PhasePlan | None, params: GenerationParams) -> tuple[tuple[float, ...], ...]:
    """The LoRA multipliers a call starts with: per expert without phases, phase 1's with them."""
    if plan is None:
        return params.loras_multipliers
    return tuple((weights[0][0] if isinstance(weights[0], tuple) else weights[0],) for weights in plan.lora_weights)


def _step_callback(params: GenerationParams, progress: ProgressCallback | None,
                   should_abort: Callable[[], bool] | None, hooks: tuple[StepHook, ...],
                   phases: PhaseDriver | None = None):
    total = params.num_inference_steps

    def on_step_end(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        for hook in hooks:
            hook(params, step)
        if phases is not None:
            phases.on_step_end(step)
        if progress is not None:
            # after the last step the pipeline decodes the latents (VAE) before it returns
            progress(step + 1, total, "decoding" if step + 1 == total else "denoising")
        if should_abort is not None and should_abort():
            raise TaskCancelled(CancelReason.CANCELLED, f"stopped after denoising step {step + 1} of {total}")
        return callback_kwargs

    return on_step_end
