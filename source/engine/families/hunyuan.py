"""HunyuanVideo text-to-video."""

from __future__ import annotations

from typing import Any

from source.engine.families.base import Family, true_cfg
from source.engine.params import GenerationParams


class HunyuanFamily(Family):
    architecture = "hunyuan"
    pipeline_class_name = "HunyuanVideoPipeline"
    lora_folder = "hunyuan"
    fps = 24

    def spatial_multiple(self, pipe) -> int:
        return pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size

    def temporal_step(self, pipe) -> int:
        return pipe.vae_scale_factor_temporal

    def call_kwargs(self, pipe, params: GenerationParams) -> dict[str, Any]:
        return {
            "num_frames": params.video_length,
            "guidance_scale": params.embedded_guidance_scale,
            **true_cfg(params),
        }
