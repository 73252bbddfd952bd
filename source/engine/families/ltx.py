"""LTX-Video text-to-video."""

from __future__ import annotations

from typing import Any

from source.engine.families.base import Family
from source.engine.params import GenerationParams


class LTXFamily(Family):
    architecture = "ltxv"
    pipeline_class_name = "LTXPipeline"
    lora_folder = "ltxv"
    fps = 25

    def spatial_multiple(self, pipe) -> int:
        return pipe.vae_spatial_compression_ratio * pipe.transformer_spatial_patch_size

    def temporal_step(self, pipe) -> int:
        return pipe.vae_temporal_compression_ratio * pipe.transformer_temporal_patch_size

    def call_kwargs(self, pipe, params: GenerationParams) -> dict[str, Any]:
        return {
            "negative_prompt": params.negative_prompt,
            "num_frames": params.video_length,
            "frame_rate": self.fps,
            "guidance_scale": params.guidance_scale,
        }
