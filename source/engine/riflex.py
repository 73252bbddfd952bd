"""WanGP's ``RIFLEx_setting`` (0 auto, 1 on, 2 off) on the Wan transformers' rotary embedding.

RIFLEx lets a video run longer than the length the model was trained on without repeating itself: the
time axis's intrinsic frequency (WanGP: the 6th of the time rope's frequencies) is lowered so that one
period covers the whole video, ``0.9 · 2π / L`` with ``L`` the number of latent frames of the call. WanGP
switches it on by itself (0) for videos longer than ``6 · fps + 1`` frames (97 at Wan's 16 fps), per
window when a video is made of sliding windows. Here the Wan transformers' ``rope`` module gets a hook for
the call that rewrites that frequency's columns of its output; the module itself is never changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog
import torch
from diffusers.hooks import HookRegistry, ModelHook

from source.engine.params import GenerationParams
from source.errors import InvalidParams

log = structlog.get_logger(__name__)

AUTO, ON, OFF = 0, 1, 2
# WanGP's k (1-based index of the time axis's intrinsic frequency) for Wan's rope.
INTRINSIC_FREQUENCY = 6
# RIFLEx keeps the extrapolated length under 90 % of one period.
PERIOD_MARGIN = 0.9
_HOOK = "riflex"


def auto_frames(fps: int) -> int:
    """WanGP's automatic RIFLEx starts above this many frames (6 s of video, plus the first frame)."""
    return 6 * fps + 1


def call_length(params: GenerationParams) -> int:
    """Frames of one pipeline call: one window when the video is made of sliding windows."""
    window = params.sliding_window_size
    return min(params.video_length, window) if window else params.video_length


def wanted(params: GenerationParams, fps: int) -> bool:
    if params.RIFLEx_setting == ON:
        return True
    return params.RIFLEx_setting == AUTO and call_length(params) > auto_frames(fps)


def time_frequencies(model: torch.nn.Module) -> int:
    return model.rope.t_dim // 2


def check(params: GenerationParams, pipe, fps: int, *, explicit: bool) -> None:
    """Refuse a requested RIFLEx the loaded transformers cannot take (a time rope with fewer frequencies
    than WanGP's k); the automatic one not asked for by the row is then simply not applied (and said so)."""
    if not explicit or not wanted(params, fps):
        return
    for model in _denoisers(pipe):
        if time_frequencies(model) < INTRINSIC_FREQUENCY:
            raise InvalidParams(
                f"params.RIFLEx_setting {params.RIFLEx_setting}: RIFLEx lowers the {INTRINSIC_FREQUENCY}th time "
                f"frequency of the rotary embedding and this model's has {time_frequencies(model)} "
                f"(attention_head_dim {model.config.attention_head_dim}); set RIFLEx_setting to 2")


class RiflexHook(ModelHook):
    """On a ``WanRotaryPosEmbed``: its cos/sin with the intrinsic time frequency set to 0.9·2π/L."""

    def __init__(self, seen: list[int]) -> None:
        super().__init__()
        self.seen = seen

    def new_forward(self, module: torch.nn.Module, hidden_states: torch.Tensor, *args, **kwargs):
        cos, sin = self.fn_ref.original_forward(hidden_states, *args, **kwargs)
        _, _, frames, height, width = hidden_states.shape
        p_t, p_h, p_w = module.patch_size
        latent_frames, per_frame = frames // p_t, (height // p_h) * (width // p_w)
        if latent_frames not in self.seen:
            self.seen.append(latent_frames)
        frequency = PERIOD_MARGIN * 2 * math.pi / latent_frames
        # Tokens are ordered frame by frame; the time axis's columns come first, each frequency twice.
        angles = torch.arange(latent_frames, dtype=torch.float64).repeat_interleave(per_frame) * frequency
        columns = slice(2 * (INTRINSIC_FREQUENCY - 1), 2 * INTRINSIC_FREQUENCY)
        cos, sin = cos.clone(), sin.clone()
        cos[0, :, 0, columns] = angles.cos().to(cos)[:, None]
        sin[0, :, 0, columns] = angles.sin().to(sin)[:, None]
        return cos, sin


@contextmanager
def riflex(pipe, params: GenerationParams, fps: int, *, explicit: bool) -> Iterator[Mapping[str, Any] | None]:
    """RIFLEx on every Wan denoiser for the call when WanGP's rule switches it on; yields what the row's
    ``result.riflex`` gets (filled when the call ends), or None when nothing was asked nor applied."""
    models = _denoisers(pipe)
    on = wanted(params, fps) and all(time_frequencies(m) >= INTRINSIC_FREQUENCY for m in models)
    report: dict[str, Any] = {"setting": params.RIFLEx_setting, "applied": on, "auto_above_frames": auto_frames(fps)}
    if not on:
        if wanted(params, fps):
            report["reason"] = (f"the rotary embedding has {time_frequencies(models[0])} time frequencies, "
                                f"RIFLEx lowers the {INTRINSIC_FREQUENCY}th")
        yield report if explicit or wanted(params, fps) else None
        return
    seen: list[int] = []
    for model in models:
        HookRegistry.check_if_exists_or_initialize(model.rope).register_hook(RiflexHook(seen), _HOOK)
        HookRegistry.check_if_exists_or_initialize(model).invalidate_child_registries_cache()
    try:
        yield report
    finally:
        for model in models:
            HookRegistry.check_if_exists_or_initialize(model.rope).remove_hook(_HOOK, recurse=False)
            HookRegistry.check_if_exists_or_initialize(model).invalidate_child_registries_cache()
        # L: the latent frames of each distinct call length (one, or the windows' lengths).
        report.update(k=INTRINSIC_FREQUENCY, L=seen, frequency=[round(PERIOD_MARGIN * 2 * math.pi / n, 6) for n in seen])
        log.info("riflex_applied", **report)


def _denoisers(pipe) -> list[torch.nn.Module]:
    from source.engine.speed import denoisers

    return denoisers(pipe)
