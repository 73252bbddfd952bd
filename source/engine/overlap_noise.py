"""WanGP's ``sliding_window_overlap_noise`` for VACE windows: noise mixed into the VACE context of the frames a
window continues from, to hide the seam (the model is told less exactly what those frames were).

As in WanGP, at every denoising step the unmasked part of the VACE context (its first ``z_dim`` channels: the
encoded frames the mask keeps) is replaced, over the continued frames' latents, by
``clean * (1 - f) + noise * f`` with ``f = overlap_noise / 1000`` and fresh noise each step. Reference-image
latents, which the pipeline puts first, are left alone. The conditional and unconditional passes of a
step get the same tensor, so batched guidance still runs them as one batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import StateManager

from source.engine.guidance_batching import _ContextOnly
from source.engine.params import GenerationParams

HOOK_NAME = "sliding_window_overlap_noise"


def latent_frames(frames: int, step: int) -> int:
    """Latent frames holding the first ``frames`` frames (the first latent frame holds one, the others ``step``)."""
    return (frames - 1) // step + 1 if frames > 0 else 0


@dataclass
class _Noise:
    frames: slice  # latent frames of the VACE context to noise
    channels: int
    factor: float
    generator: torch.Generator
    _clean: torch.Tensor | None = None
    _noised: torch.Tensor | None = None

    def noised(self, control: torch.Tensor, new_step: bool) -> torch.Tensor:
        if not new_step and control is self._clean and self._noised is not None:
            return self._noised
        clean = control[:, :self.channels, self.frames]
        noise = torch.randn(clean.shape, generator=self.generator, dtype=torch.float32).to(clean)
        noised = control.clone()
        noised[:, :self.channels, self.frames] = clean * (1.0 - self.factor) + noise * self.factor
        self._clean, self._noised = control, noised
        return noised


class OverlapNoiseHook(ModelHook):
    _is_stateful = True

    def __init__(self, noise: _Noise) -> None:
        super().__init__()
        self.state_manager = StateManager(_ContextOnly)
        self.noise = noise

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        return module  # what it keeps lasts exactly the call it is installed for

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        control = kwargs.get("control_hidden_states")
        if control is not None:
            context = self.state_manager._context
            kwargs["control_hidden_states"] = self.noise.noised(
                control, new_step=context is None or context.name != "uncond")
        return self.fn_ref.original_forward(*args, **kwargs)


@contextmanager
def overlap_noise(pipe, params: GenerationParams, continued: int, step: int, seed: int) -> Iterator[int]:
    """The noise on each denoiser for one VACE window call that continues ``continued`` frames; yields the
    number of latent frames noised (0: nothing installed)."""
    count = latent_frames(continued, step)
    if params.sliding_window_overlap_noise <= 0 or count == 0:
        yield 0
        return
    from source.engine.loras import expert_components

    references = len(params.image_refs or ())
    noise = _Noise(slice(references, references + count), pipe.vae.config.z_dim,
                   params.sliding_window_overlap_noise / 1000, torch.Generator("cpu").manual_seed(seed))
    models = [getattr(pipe, name) for name in expert_components(pipe)]
    for model in models:
        HookRegistry.check_if_exists_or_initialize(model).register_hook(OverlapNoiseHook(noise), HOOK_NAME)
    try:
        yield count
    finally:
        for model in models:
            HookRegistry.check_if_exists_or_initialize(model).remove_hook(HOOK_NAME, recurse=False)
