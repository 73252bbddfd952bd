"""WanGP's step cache (``skip_steps_cache_type: "mag"``) on diffusers' MagCache, planned to meet
``skip_steps_multiplier`` and never skipping before ``skip_steps_start_step_perc``; and a count of the
full transformer passes that ran, so a row's result says how many were skipped.

MagCache skips a step's transformer blocks (reusing the previous residual) while the accumulated error
predicted by the model's per-step magnitude ratios stays under a threshold. The decision depends only on
those ratios, so, as WanGP does, the threshold is chosen before the call by simulating the rule: the one
whose number of full passes is closest to ``steps / multiplier``. The ratios are WanGP's, measured on the
real Wan 2.1 14B models (text and image to video; VACE uses the text ones).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog
import torch

from source.engine.params import GenerationParams
from source.errors import InvalidParams

log = structlog.get_logger(__name__)

# WanGP's "magcache_K": at most this many consecutive steps skipped.
MAX_SKIP_STEPS = 2
# Steps 0 and 1 always run: with batched guidance the first step runs its two halves separately (the hook
# learns the negative prompt there), so the residual cached at step 0 has half the batch of step 1's.
FIRST_SKIPPABLE_STEP = 2
# Conditional-pass ratios (WanGP lists conditional and unconditional interleaved, after two 1.0 steps).
_WAN_T2V_14B = (
    1.02504, 1.00025, 0.9985, 0.99779, 0.9966, 0.99482, 0.99467, 0.99664, 0.99434, 0.99533, 0.99468, 0.99438,
    0.99516, 0.99384, 0.99404, 0.99517, 0.99409, 0.99428, 0.99347, 0.99418, 0.99271, 0.99313, 0.99215, 0.99218,
    0.99216, 0.99163, 0.99138, 0.98982, 0.98996, 0.9887, 0.98772, 0.98767, 0.98573, 0.98501, 0.9838, 0.98177,
    0.98037, 0.97678, 0.97546, 0.97184, 0.96711, 0.96349, 0.95629, 0.94926, 0.93964, 0.92511, 0.90693, 0.8796,
    0.86111)
_WAN_I2V_480P = (
    0.98783, 0.97559, 0.98311, 0.98202, 0.9888, 0.98762, 0.98957, 0.99052, 0.99383, 0.98857, 0.99065, 0.98845,
    0.99057, 0.98957, 0.98601, 0.98823, 0.98756, 0.98808, 0.98721, 0.98571, 0.98543, 0.98157, 0.98411, 0.97952,
    0.98149, 0.9774, 0.97825, 0.97355, 0.97085, 0.97056, 0.96588, 0.96113, 0.9567, 0.94961, 0.93973, 0.93217,
    0.91878, 0.90955, 0.92617)
MAG_RATIOS = {"wan_t2v": (1.0, *_WAN_T2V_14B), "wan_vace": (1.0, *_WAN_T2V_14B), "wan_i2v": (1.0, *_WAN_I2V_480P)}


@dataclass(frozen=True)
class CachePlan:
    threshold: float
    ratios: tuple[float, ...]
    start_step: int
    planned_full_steps: int


def interpolate(ratios: Sequence[float], steps: int) -> tuple[float, ...]:
    """WanGP's nearest-neighbour resampling of a ratio table to ``steps`` entries."""
    source = np.asarray(ratios)
    if steps == 1:
        return (float(source[-1]),)
    index = np.round(np.arange(steps) * (len(source) - 1) / (steps - 1)).astype(int)
    return tuple(float(r) for r in source[index])


def simulate(ratios: Sequence[float], threshold: float, start_step: int) -> list[bool]:
    """diffusers' MagCache rule, step by step: True where the full pass runs."""
    computed, ratio, steps, error = [], 1.0, 0, 0.0
    for index, current in enumerate(ratios):
        compute = True
        if index >= start_step:
            ratio *= current
            steps += 1
            error += abs(1.0 - ratio)
            if index > 0 and error <= threshold and steps <= MAX_SKIP_STEPS:
                compute = False
            else:
                ratio, steps, error = 1.0, 0, 0.0
        computed.append(compute)
    return computed


def plan(architecture: str, steps: int, multiplier: float, start_perc: float) -> CachePlan:
    ratios = interpolate(MAG_RATIOS[architecture], steps)
    start_step = max(FIRST_SKIPPABLE_STEP, int(start_perc / 100 * steps + 0.5))
    target = steps / multiplier
    best: tuple[float, float, int] | None = None
    for threshold in np.arange(0.01, 0.6001, 0.01):
        full = sum(simulate(ratios, float(threshold), start_step))
        if best is None or abs(full - target) < best[0]:
            best = (abs(full - target), float(threshold), full)
    assert best is not None
    return CachePlan(round(best[1], 4), ratios, start_step, best[2])


@dataclass
class PassCounter:
    """Transformer calls that produced an output, and those whose blocks really ran."""

    calls: int = 0
    full: int = 0
    _handles: list[Any] = field(default_factory=list)

    def attach(self, model: torch.nn.Module) -> None:
        blocks = model.blocks
        self._handles += [model.proj_out.register_forward_hook(lambda *_: self._add("calls")),
                          blocks[-1].ffn.register_forward_hook(lambda *_: self._add("full"))]

    def _add(self, name: str) -> None:
        setattr(self, name, getattr(self, name) + 1)

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def summary(self) -> dict[str, Any]:
        skipped = self.calls - self.full
        return {"transformer_passes": self.calls, "full_passes": self.full, "passes_skipped": skipped,
                "fraction_skipped": round(skipped / self.calls, 4) if self.calls else 0.0}


def check(params: GenerationParams, pipe) -> None:
    """Refusals that need the loaded pipeline."""
    if not params.skip_steps_cache_type:
        return
    if getattr(pipe.config, "boundary_ratio", None) is not None:
        raise InvalidParams("params.skip_steps_cache_type 'mag': not calibrated for two-expert Wan 2.2 models here; "
                            "leave skip_steps_cache_type empty")
    for model in _denoisers(pipe):
        if getattr(model, "_cache_config", None) is not None:
            raise InvalidParams("params.skip_steps_cache_type: this model's definition already enables a step cache "
                                "(engine.first_block_cache); leave skip_steps_cache_type empty")


@contextmanager
def step_cache(pipe, params: GenerationParams, architecture: str) -> Iterator[dict[str, Any] | None]:
    """MagCache on the denoisers for one call (when asked), and the pass count; yields the dict that the
    row's ``result.step_cache`` gets (filled when the call ends), or None when no cache was asked for."""
    if not params.skip_steps_cache_type:
        yield None
        return
    from diffusers.hooks import MagCacheConfig

    steps = params.num_inference_steps
    cache_plan = plan(architecture, steps, params.skip_steps_multiplier, params.skip_steps_start_step_perc)
    config = MagCacheConfig(threshold=cache_plan.threshold, max_skip_steps=MAX_SKIP_STEPS,
                            retention_ratio=cache_plan.start_step / steps, num_inference_steps=steps,
                            mag_ratios=list(cache_plan.ratios))
    counter = PassCounter()
    report: dict[str, Any] = {"type": "mag", "implementation": "diffusers MagCache",
                              "multiplier": params.skip_steps_multiplier,
                              "start_step_perc": params.skip_steps_start_step_perc,
                              "start_step": cache_plan.start_step, "threshold": cache_plan.threshold,
                              "planned_full_steps": cache_plan.planned_full_steps, "steps": steps}
    models = _denoisers(pipe)
    for model in models:
        model.enable_cache(config)
        counter.attach(model)
    try:
        yield report
    finally:
        for model in models:
            model.disable_cache()
        counter.detach()
        report.update(counter.summary())
        log.info("step_cache_applied", **report)


def _denoisers(pipe) -> list[torch.nn.Module]:
    from source.engine.speed import denoisers

    return denoisers(pipe)
