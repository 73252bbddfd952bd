"""LTX-2 text-to-video with its generated soundtrack (diffusers' LTX2Pipeline: one transformer denoises the
video and audio latents together; the audio VAE and vocoder turn the audio latents into a waveform)."""

from __future__ import annotations

from typing import Any

import numpy as np

from source.engine.families.ltx import LTXFamily
from source.engine.params import GenerationParams


class LTX2Family(LTXFamily):
    """LTX-Video's geometry (VAE compression x transformer patch) and call, with LTX-2's pipeline and rate."""

    architecture = "ltx2"
    pipeline_class_name = "LTX2Pipeline"
    lora_folder = "ltx2"
    fps = 24

    def call_kwargs(self, pipe, params: GenerationParams) -> dict[str, Any]:
        return {**super().call_kwargs(pipe, params), "frame_rate": float(self.fps)}  # LTX2Pipeline takes a float

    def soundtracks(self, pipe, result) -> list[tuple[np.ndarray, int] | None]:
        rate = int(pipe.vocoder.config.output_sampling_rate)
        return [(np.asarray(audio.float().cpu() if hasattr(audio, "cpu") else audio, dtype=np.float32), rate)
                for audio in result.audio]
