"""Flux text-to-image (``video_length`` images per call) and Flux Kontext image editing."""

from __future__ import annotations

from typing import Any

from source.engine.families.base import Family, true_cfg
from source.engine.params import GenerationParams
from source.errors import InvalidParams
from source.media.load import load_image


class FluxFamily(Family):
    architecture = "flux"
    pipeline_class_name = "FluxPipeline"
    lora_folder = "flux"
    is_video = False

    def spatial_multiple(self, pipe) -> int:
        return pipe.vae_scale_factor * 2

    def call_kwargs(self, pipe, params: GenerationParams) -> dict[str, Any]:
        return {
            "num_images_per_prompt": params.video_length,
            # Flux is guidance-distilled: its "guidance_scale" is the embedded one.
            "guidance_scale": params.embedded_guidance_scale,
            **true_cfg(params),
        }

    def frame_count(self, params: GenerationParams) -> int:
        return 1


class FluxKontextFamily(FluxFamily):
    architecture = "flux_kontext"
    pipeline_class_name = "FluxKontextPipeline"

    def call_kwargs(self, pipe, params: GenerationParams) -> dict[str, Any]:
        source = params.image_start if params.image_start is not None else next(iter(params.image_refs), None)
        if source is None:
            raise InvalidParams("flux_kontext edits an image: give image_start (or image_refs)")
        kwargs = super().call_kwargs(pipe, params)
        # The image enters the model at the row's size: with its resize off (below) the pipeline takes an
        # image at its own size, and a 512x600 photo cost a tiny model 1,400x a 64x48 one.
        kwargs["image"] = load_image(source, "image_start", (params.width, params.height))
        # Keep the requested size instead of snapping to Kontext's preferred training resolutions.
        kwargs["max_area"] = params.width * params.height
        kwargs["_auto_resize"] = False
        return kwargs
