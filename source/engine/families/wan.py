"""Wan 2.1/2.2: text-to-video (one or two experts), image-to-video, and VACE (guides, masks, references)."""

from __future__ import annotations

from typing import Any

from source.engine.families.base import Family
from source.engine.params import GenerationParams
from source.errors import InvalidParams
from source.media.load import load_image, load_image_within, load_video


class WanFamily(Family):
    lora_folder = "wan"
    fps = 16
    takes_riflex = True
    takes_phases = True
    solvers = ("unipc", "euler", "dpm++")

    def spatial_multiple(self, pipe) -> int:
        transformer = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
        return pipe.vae_scale_factor_spatial * transformer.config.patch_size[1]

    def temporal_step(self, pipe) -> int:
        return pipe.vae_scale_factor_temporal

    def validate(self, pipe, params: GenerationParams) -> None:
        super().validate(pipe, params)
        # The rotary position table has rope_max_seq_len entries per axis; a larger patch grid would
        # crash inside the transformer with a shape error instead of a message.
        transformer = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
        limit = transformer.config.rope_max_seq_len
        patch_t, patch_h, patch_w = transformer.config.patch_size
        spatial = pipe.vae_scale_factor_spatial
        grid = {
            "width": params.width // (spatial * patch_w),
            "height": params.height // (spatial * patch_h),
            "video_length": ((params.video_length - 1) // self.temporal_step(pipe) + 1) // patch_t,
        }
        too_large = {name: cells for name, cells in grid.items() if cells > limit}
        if too_large:
            raise InvalidParams(
                f"{', '.join(too_large)} too large for this model: resolution {params.resolution}, video_length "
                f"{params.video_length} makes a patch grid of {grid['width']}x{grid['height']}x"
                f"{grid['video_length']}; its position table allows at most {limit} per axis"
            )

    def call_kwargs(self, pipe, params: GenerationParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "negative_prompt": params.negative_prompt,
            "num_frames": params.video_length,
            "guidance_scale": params.guidance_scale,
        }
        if pipe.config.boundary_ratio is not None:
            # Wan 2.2: the second (low-noise) expert takes over below the boundary with its own guidance.
            kwargs["guidance_scale_2"] = (
                params.guidance2_scale if params.guidance2_scale is not None else params.guidance_scale
            )
        return kwargs


class WanT2VFamily(WanFamily):
    architecture = "wan_t2v"
    pipeline_class_name = "WanPipeline"


class WanI2VFamily(WanFamily):
    architecture = "wan_i2v"
    pipeline_class_name = "WanImageToVideoPipeline"

    def call_kwargs(self, pipe, params: GenerationParams) -> dict[str, Any]:
        if params.image_start is None:
            raise InvalidParams("image-to-video needs image_start (the first frame)")
        size = (params.width, params.height)
        kwargs = super().call_kwargs(pipe, params)
        kwargs["image"] = load_image(params.image_start, "image_start", size)
        if params.image_end is not None:
            kwargs["last_image"] = load_image(params.image_end, "image_end", size)
        return kwargs


class WanVACEFamily(WanFamily):
    architecture = "wan_vace"
    pipeline_class_name = "WanVACEPipeline"

    def call_kwargs(self, pipe, params: GenerationParams) -> dict[str, Any]:
        kwargs = super().call_kwargs(pipe, params)
        size, frames = (params.width, params.height), params.video_length
        if params.video_mask is not None and params.video_guide is None:
            raise InvalidParams("video_mask needs a video_guide")
        if params.video_mask2 is not None and params.video_guide2 is None:
            raise InvalidParams("video_mask2 needs a video_guide2")
        if params.video_guide2 is not None and params.video_guide is None:
            raise InvalidParams("video_guide2 needs a video_guide (the second pair overlays the first)")
        if params.video_guide is not None:
            guide = load_video(params.video_guide, "video_guide", frames, size)
            mask = load_video(params.video_mask, "video_mask", frames, size) if params.video_mask is not None else None
            if params.video_guide2 is not None:
                guide, mask = overlay_second_guide(guide, mask, params, frames, size)
            kwargs["video"] = guide
            if mask is not None:
                kwargs["mask"] = mask
        if params.image_refs:
            kwargs["reference_images"] = [load_image_within(ref, "image_refs", size) for ref in params.image_refs]
        kwargs["conditioning_scale"] = params.control_net_weight
        return kwargs


def overlay_second_guide(guide, mask, params: GenerationParams, frames: int, size: tuple[int, int]):
    """The second guide/mask pair overlays the first: where mask2 is white the second guide's pixels
    are used and the frame is generated; elsewhere the first pair applies. Without mask2 the second guide
    replaces the first wherever the first mask keeps pixels (black)."""
    import numpy as np
    from PIL import Image

    guide2 = load_video(params.video_guide2, "video_guide2", frames, size)
    mask2 = (load_video(params.video_mask2, "video_mask2", frames, size) if params.video_mask2 is not None
             else [Image.new("RGB", size, (255, 255, 255))] * frames)
    mask1 = mask or [Image.new("RGB", size, (255, 255, 255))] * frames
    out_guide, out_mask = [], []
    for g1, m1, g2, m2 in zip(guide, mask1, guide2, mask2, strict=True):
        where2 = np.asarray(m2.convert("L"))[..., None] > 127
        out_guide.append(Image.fromarray(np.where(where2, np.asarray(g2), np.asarray(g1)).astype(np.uint8)))
        union = np.maximum(np.asarray(m1.convert("L")), np.asarray(m2.convert("L")))
        out_mask.append(Image.fromarray(union).convert("RGB"))
    return out_guide, out_mask
