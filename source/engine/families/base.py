"""What every family shares: input checks against the loaded pipeline and the common call arguments."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import structlog

from source.engine.params import GenerationParams, nearest_valid, valid_frame_count
from source.errors import InvalidParams


class Family:
    """A model family: its diffusers pipeline class and how GenerationParams become that pipeline's call."""

    architecture: ClassVar[str]
    pipeline_class_name: ClassVar[str]
    lora_folder: ClassVar[str]
    fps: ClassVar[int] = 16
    is_video: ClassVar[bool] = True
    # Whether RIFLEx_setting can apply (source/engine/riflex.py: Wan's rotary embedding).
    takes_riflex: ClassVar[bool] = False
    # WanGP guidance phases (source/engine/phases.py): Wan only.
    takes_phases: ClassVar[bool] = False
    # The first solver is the model's own scheduler.
    solvers: ClassVar[tuple[str, ...]] = ("euler",)
    # Of the parameters only some families read (image_mask, denoising_strength, system_prompt), those this one
    # honours; features.check_supported refuses the others in the prepare stage.
    takes: ClassVar[frozenset[str]] = frozenset()

    def pipeline_class(self) -> type:
        import diffusers

        return getattr(diffusers, self.pipeline_class_name)

    # --- constraints read from the loaded pipeline, so tiny and real configs both get the right numbers
    def spatial_multiple(self, pipe) -> int:
        raise NotImplementedError

    def temporal_step(self, pipe) -> int:
        """Video length must be ``step * k + 1`` (the VAE's temporal compression)."""
        return 1

    def _multiple(self, pipe) -> int:
        multiple = self.spatial_multiple(pipe)
        # yuv420p H.264 also needs even sizes; every multiple here is already even except Flux's tiny 2.
        return multiple if multiple % 2 == 0 else multiple * 2

    def conform(self, pipe, params: GenerationParams, *,
                exact_length: bool = False) -> tuple[GenerationParams, dict[str, Any]]:
        """``params`` with the size rounded to the nearest multiple this pipeline needs and a video length
        to the nearest ``step*k+1``, as WanGP adjusts them instead of refusing; ``adjusted`` says what changed
        (param → requested, used), and each change is logged as a warning. ``exact_length``: a video made of
        sliding windows keeps the length asked for (each window is a valid length of its own)."""
        multiple, step = self._multiple(pipe), self.temporal_step(pipe)
        width, height = nearest_valid(params.width, multiple), nearest_valid(params.height, multiple)
        # one frame (k = 0) is a valid length: single images from video models
        length = valid_frame_count(params.video_length, step=step) \
            if self.is_video and not exact_length else params.video_length
        adjusted: dict[str, Any] = {}
        if (width, height) != (params.width, params.height):
            adjusted["resolution"] = {"requested": params.resolution, "used": f"{width}x{height}"}
        if length != params.video_length:
            adjusted["video_length"] = {"requested": params.video_length, "used": length}
        for name, change in adjusted.items():
            structlog.get_logger(__name__).warning("value_adjusted", param=name, **change,
                                                   reason=f"rounded to the nearest value {self.architecture} supports")
        return replace(params, width=width, height=height, video_length=length), adjusted

    def validate(self, pipe, params: GenerationParams) -> None:
        multiple = self._multiple(pipe)
        if params.width % multiple or params.height % multiple:
            raise InvalidParams(
                f"resolution {params.resolution} is not supported by {self.architecture}: width and height must "
                f"be multiples of {multiple} (e.g. {params.width // multiple * multiple or multiple}x"
                f"{params.height // multiple * multiple or multiple})"
            )
        step = self.temporal_step(pipe)
        if self.is_video and (params.video_length - 1) % step:
            lower = (params.video_length - 1) // step * step + 1
            raise InvalidParams(
                f"video_length {params.video_length} is not supported by {self.architecture}: it must be "
                f"{step}*k+1 (e.g. {lower} or {lower + step})"
            )

    # --- the call
    def call_kwargs(self, pipe, params: GenerationParams) -> dict[str, Any]:
        """Family-specific arguments; the engine adds prompt, size, steps, generator and the step callback."""
        raise NotImplementedError

    def call_context(self, pipe, params: GenerationParams) -> AbstractContextManager:
        """Temporary changes to the pipeline around one call (e.g. a second VACE guide)."""
        return nullcontext()

    def runner(self, pipe, kwargs: dict[str, Any]) -> Callable[..., Any]:
        """What runs this call: the resident pipeline, or a sibling pipeline over its components. It may take
        out of ``kwargs`` the definition's pipeline_kwargs that are settings of the family rather than of the call."""
        return pipe

    def finish(self, arrays: list[np.ndarray], params: GenerationParams) -> list[np.ndarray]:
        """The call's outputs after any family-level step (e.g. pixels outside an inpainting mask put back)."""
        return arrays

    def extra_components(self, folder: Path) -> dict[str, Any]:
        """Components to build instead of reading them from ``folder`` (passed to ``from_pretrained``)."""
        return {}

    def outputs(self, result) -> list[np.ndarray]:
        """Pipeline output → one array per file: (F, H, W, 3) videos or (H, W, 3) images, floats in [0, 1]."""
        if self.is_video:
            return [np.asarray(video) for video in result.frames]
        return [np.asarray(image) for image in result.images]

    def soundtracks(self, pipe, result) -> list[tuple[np.ndarray, int] | None]:
        """Per output, the sound the pipeline generated with it: (float (channels, n), sample rate), or None."""
        return [None] * len(self.outputs(result))

    def frame_count(self, params: GenerationParams) -> int:
        return params.video_length


def true_cfg(params: GenerationParams) -> dict[str, Any]:
    """Guidance-distilled families (Flux, Hunyuan) run real CFG only when asked: guidance_scale > 1 and a negative."""
    if params.guidance_scale > 1.0 and params.negative_prompt:
        return {"true_cfg_scale": params.guidance_scale, "negative_prompt": params.negative_prompt}
    return {"true_cfg_scale": 1.0}
