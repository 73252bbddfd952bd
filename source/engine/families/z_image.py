"""Z-Image (Turbo 6B): text-to-image, and image-to-image on the same weights (``image_start`` +
``denoising_strength``), through diffusers' img2img sibling pipeline over the resident components."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from source.engine.families.base import Family
from source.engine.families.qwen import sibling
from source.engine.params import GenerationParams
from source.errors import InvalidParams
from source.media.load import load_image


class ZImageFamily(Family):
    architecture = "z_image"
    pipeline_class_name = "ZImagePipeline"
    lora_folder = "z_image"
    is_video = False
    takes = frozenset({"image_start", "denoising_strength"})

    def spatial_multiple(self, pipe) -> int:
        return pipe.vae_scale_factor * 2

    def frame_count(self, params: GenerationParams) -> int:
        return 1

    def call_kwargs(self, pipe, params: GenerationParams) -> dict[str, Any]:
        # Turbo is distilled for guidance 0 (one pass); a guidance above 1 runs CFG with the negative prompt.
        kwargs: dict[str, Any] = {"num_images_per_prompt": params.video_length,
                                  "guidance_scale": params.guidance_scale}
        if params.guidance_scale > 1.0 and params.negative_prompt:
            kwargs["negative_prompt"] = params.negative_prompt
        if params.image_start is not None:
            kwargs["image"] = load_image(params.image_start, "image_start", (params.width, params.height))
            kwargs["strength"] = params.denoising_strength
        elif params.denoising_strength < 1.0:
            raise InvalidParams(f"params.denoising_strength {params.denoising_strength:g} needs image_start (the "
                                "image to start from)")
        return kwargs

    def runner(self, pipe, kwargs: dict[str, Any]) -> Callable[..., Any]:
        return sibling(pipe, "ZImageImg2ImgPipeline") if "image" in kwargs else pipe
