"""LTX-2 text-to-video with its generated soundtrack (diffusers' LTX2Pipeline: one transformer denoises the
video and audio latents together; the audio VAE and vocoder turn the audio latents into a waveform)."""

from __future__ import annotations

from typing import Any

import numpy as np

from source.engine.families.base import Family
from source.engine.params import GenerationParams


class LTX2Family(Family):
    architecture = "ltx2"
    pipeline_class_name = "LTX2Pipeline"
    lora_folder = "ltx2"
    fps = 24

    def spatial_multiple(self, pipe) -> int:
        return pipe.vae_spatial_compression_ratio * pipe.transformer_spatial_patch_size

    def temporal_step(self, pipe) -> int:
        return pipe.vae_temporal_compression_ratio * pipe.transformer_temporal_patch_size

    def call_kwargs(self, pipe, params: GenerationParams) -> dict[str, Any]:
        return {
            "negative_prompt": params.negative_prompt,
            "num_frames": params.video_length,
            "frame_rate": float(self.fps),
            "guidance_scale": params.guidance_scale,
        }

    def soundtracks(self, pipe, result) -> list[tuple[np.ndarray, int] | None]:
        rate = int(pipe.vocoder.config.output_sampling_rate)
        return [(np.asarray(audio.float().cpu() if hasattr(audio, "cpu") else audio, dtype=np.float32), rate)
                for audio in result.audio]
