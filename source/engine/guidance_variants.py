"""WanGP's guidance variants on Wan's classifier-free guidance: CFG-Zero* (``cfg_star_switch``,
``cfg_zero_step``), adaptive projected guidance (``apg_switch``), as a hook on the denoiser's output, and
skip-layer guidance (``slg_switch``, ``slg_layers``, ``slg_start_perc``, ``slg_end_perc``: as in WanGP, the
unconditional pass of the steps in that range runs without those blocks; batched guidance is paused for
such a generation, since its two passes then differ in more than the prompt).

diffusers' guiders (ClassifierFreeZeroStarGuidance, AdaptiveProjectedGuidance) plug into modular pipelines
only; WanPipeline combines the two passes itself as ``u + s * (c - u)``. So the hook keeps the step's
conditional output ``c`` and returns, for the unconditional pass, the ``u'`` that makes that same line
give the variant's prediction ``D``: ``u' = (D - s * c) / (1 - s)``. It sits outside the batched guidance
hook, so it sees the same two outputs whether the halves ran batched or one at a time; with both variants
off it is not installed and the plain path is untouched.
- CFG-Zero* (WanGP, after github.com/WeichenFan/CFG-Zero-star): ``u`` scaled by ``alpha = <c, u> / |u|^2``
  per sample; steps up to ``cfg_zero_step`` predict zero (the "zero init").
- APG (WanGP's momentum -0.75, norm threshold 55): ``D = c + (s - 1) * g`` where ``g`` is ``c - u`` with a
  momentum running average, its norm capped, and only its part orthogonal to ``c`` kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import structlog
import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import StateManager

from source.engine.guidance_batching import _ContextOnly
from source.engine.params import GenerationParams
from source.errors import InvalidParams

log = structlog.get_logger(__name__)

HOOK_NAME = "guidance_variant"
APG_MOMENTUM = -0.75
APG_NORM_THRESHOLD = 55.0


@dataclass
class _Clock:
    """Denoising steps seen, shared by both experts of a two-expert model (cfg_zero_step counts from 0)."""

    step: int = -1
    combined: int = 0
    zeroed: int = 0
    # Skip-layer guidance: the steps [first, end) whose unconditional pass skips the layers, and whether
    # the pass running now is one of them.
    slg_steps: range = range(0)
    skipping: bool = False
    skipped_passes: int = 0


class GuidanceVariantHook(ModelHook):
    _is_stateful = True

    def __init__(self, variant: str | None, scale: float, zero_steps: int, clock: _Clock) -> None:
        super().__init__()
        self.state_manager = StateManager(_ContextOnly)
        self.variant, self.scale, self.zero_steps, self.clock = variant, scale, zero_steps, clock
        self._cond: torch.Tensor | None = None
        self._momentum: torch.Tensor | float = 0.0

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self._cond, self._momentum = None, 0.0
        self.clock.step = -1  # each call (a sliding window too) counts its steps from 0
        return module

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        context = self.state_manager._context
        name = context.name if context is not None else None
        self.clock.skipping = name == "uncond" and self.clock.step in self.clock.slg_steps
        self.clock.skipped_passes += self.clock.skipping
        try:
            output = self.fn_ref.original_forward(*args, **kwargs)
        finally:
            self.clock.skipping = False
        if self.variant is None:
            if name == "cond":
                self.clock.step += 1
            return output
        if name == "cond":
            self.clock.step += 1
            self._cond = _sample(output)
        elif name == "uncond" and self._cond is not None:
            cond, self._cond = self._cond, None
            output = _with_sample(output, self._unconditional(cond, _sample(output)))
        return output

    def _unconditional(self, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
        s = self.scale
        self.clock.combined += 1
        if self.variant == "cfg_zero_star":
            if self.clock.step <= self.zero_steps:
                self.clock.zeroed += 1
                return cond * (s / (s - 1))  # u + s (c - u) = 0
            flat_c, flat_u = cond.flatten(1).double(), uncond.flatten(1).double()
            alpha = (flat_c * flat_u).sum(1) / (flat_u.pow(2).sum(1) + 1e-8)
            return (uncond * alpha.view(-1, *[1] * (uncond.ndim - 1)).to(uncond.dtype))
        guided = self._projected(cond, cond - uncond)
        return cond - guided  # u' + s (c - u') = c + (s - 1) g

    def _projected(self, cond: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
        self._momentum = diff + APG_MOMENTUM * self._momentum
        diff = self._momentum
        dims = list(range(1, diff.ndim))
        norm = diff.norm(p=2, dim=dims, keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(norm), APG_NORM_THRESHOLD / norm)
        d, c = diff.double(), torch.nn.functional.normalize(cond.double(), dim=dims)
        parallel = (d * c).sum(dim=dims, keepdim=True) * c
        return (d - parallel).to(cond.dtype)


def _sample(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output.sample


def _with_sample(output, sample: torch.Tensor):
    return (sample, *output[1:]) if isinstance(output, tuple) else type(output)(sample=sample)


def _skip_when(clock: _Clock):
    """A block's forward hook: its input passes through unchanged while the clock says skip."""
    def hook(module, args, output):
        return args[0] if clock.skipping else output
    return hook


def variant_of(params: GenerationParams) -> str | None:
    if params.cfg_star_switch:
        return "cfg_zero_star"
    if params.apg_switch:
        return "apg"
    return None


@contextmanager
def guidance_variant(pipe, params: GenerationParams) -> Iterator[dict[str, Any] | None]:
    """The variant's hook on each denoiser for one call; yields the row's ``result.guidance`` (filled when
    the call ends), or None when no variant was asked for."""
    variant = variant_of(params)
    if variant is None and not params.slg_switch:
        yield None
        return
    from source.engine.guidance_batching import hook_of
    from source.engine.loras import expert_components

    clock = _Clock()
    steps = params.num_inference_steps
    names = expert_components(pipe)
    models = [getattr(pipe, name) for name in names]
    handles = []
    if params.slg_switch:
        clock.slg_steps = range(int(params.slg_start_perc / 100 * steps), int(params.slg_end_perc / 100 * steps))
        depth = min(len(model.blocks) for model in models)
        if not params.slg_layers or max(params.slg_layers) >= depth:
            raise InvalidParams(f"params.slg_layers {list(params.slg_layers)}: give block indices below {depth} "
                                f"(this model's number of blocks)")
        for model in models:
            handles += [model.blocks[layer].register_forward_hook(_skip_when(clock)) for layer in params.slg_layers]
    batched = [hook for hook in (hook_of(model) for model in models) if hook is not None]
    for hook in batched:
        hook.enabled = not params.slg_switch
    second = params.guidance2_scale if params.guidance2_scale is not None else params.guidance_scale
    scales = {"transformer": params.guidance_scale, "transformer_2": second}
    for name, model in zip(names, models, strict=True):
        HookRegistry.check_if_exists_or_initialize(model).register_hook(
            GuidanceVariantHook(variant, scales[name], params.cfg_zero_step, clock), HOOK_NAME)
    report: dict[str, Any] = {"variant": variant} if variant else {}
    if variant == "cfg_zero_star":
        report["cfg_zero_step"] = params.cfg_zero_step
    elif variant == "apg":
        report.update(momentum=APG_MOMENTUM, norm_threshold=APG_NORM_THRESHOLD)
    if params.slg_switch:
        report["skip_layer_guidance"] = {"layers": list(params.slg_layers), "steps": [clock.slg_steps.start,
                                                                                     clock.slg_steps.stop]}
    try:
        yield report
    finally:
        for model in models:
            HookRegistry.check_if_exists_or_initialize(model).remove_hook(HOOK_NAME, recurse=False)
        for handle in handles:
            handle.remove()
        for hook in batched:
            hook.enabled = True
        if variant:
            report.update(steps_combined=clock.combined, **({"steps_zeroed": clock.zeroed}
                                                              if variant == "cfg_zero_star" else {}))
        if params.slg_switch:
            report["skip_layer_guidance"]["unconditional_passes_skipping"] = clock.skipped_passes
        log.info("guidance_variant_applied", **report)
