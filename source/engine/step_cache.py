"""WanGP's step caches (``skip_steps_cache_type`` ``"mag"`` and ``"tea"``): one cache framework, two
decision rules. A skipped step runs none of the transformer's blocks and adds the residual (output − input
of the blocks) of the last full pass instead; ``skip_steps_multiplier`` sets the planned speed-up and no
step before ``skip_steps_start_step_perc`` is skipped. The row's result says how many passes were skipped.

Both rules decide from quantities known before the call, so, as WanGP does, the threshold is chosen by
simulating the rule over the whole schedule (the one whose number of full passes is closest to
``steps / multiplier``) and the hooks then follow that plan step by step:
- MagCache ("mag"): the accumulated error predicted by the model's per-step residual magnitude ratios
  (WanGP's tables, measured on the real Wan models), at most 2 consecutive skips.
- TeaCache ("tea"): the relative L1 distance between consecutive steps' timestep embeddings (the
  transformer's own ``time_embedder`` output, WanGP's ``e``), rescaled by WanGP's per-model polynomial and
  accumulated until it reaches the threshold; the last step always runs.
Two-expert Wan 2.2 models get one plan split at the expert switch: each expert keeps its own cache state,
which starts afresh at its first step (as WanGP resets it), so no residual crosses from one expert to the
other. The hooks sit on diffusers' hook registry and its per-context (cond/uncond) state: the residual
is measured from the first block's input to the output norm's, so VACE's hints (added between blocks,
outside them) are part of it as in WanGP; diffusers' MagCache hooks keep it at the last block instead and
would count those hints twice on a skipped step.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog
import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, CacheContext, StateManager

from source.engine.params import GenerationParams
from source.errors import InvalidParams

log = structlog.get_logger(__name__)

# WanGP's "magcache_K": at most this many consecutive steps skipped.
MAX_SKIP_STEPS = 2
# The first two steps of each expert always run: with batched guidance an expert's first step runs its two
# halves separately (the hook learns the negative prompt there), so the residual cached at that step has
# half the batch of the next one's.
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
# Wan 2.2 A14B, both experts in one table (the drop at the expert switch forces a full pass there).
_WAN22_T2V = (
    1.00124, 0.99822, 0.99696, 0.99703, 0.9966, 0.99602, 0.99578, 0.99484, 0.99633, 0.99659, 0.99534, 0.99584,
    0.99681, 0.99563, 0.9944, 0.99594, 0.99466, 0.99453, 0.99389, 0.99391, 0.99354, 0.99283, 0.99268, 0.99057,
    0.99125, 0.65523, 0.98808, 0.98765, 0.9851, 0.98311, 0.9805, 0.97776, 0.97278, 0.96731, 0.95857, 0.94385,
    0.92118, 0.88108, 0.80263)
_WAN22_I2V = (
    0.99191, 0.99356, 0.99326, 0.99251, 0.99393, 0.9943, 0.99276, 0.99389, 0.99274, 0.99316, 0.99379, 0.99268,
    0.99222, 0.99175, 0.91076, 0.98931, 0.99087, 0.98852, 0.98895, 0.98806, 0.9871, 0.98613, 0.98434, 0.983,
    0.98185, 0.98131, 0.9783, 0.97619, 0.97264, 0.97088, 0.96568, 0.96045, 0.95322, 0.94579, 0.93297, 0.91699,
    0.89174, 0.8541, 0.79823)
# (architecture, two experts) → ratios; VACE uses the text-to-video ones, as in WanGP.
MAG_RATIOS = {
    ("wan_t2v", False): (1.0, *_WAN_T2V_14B), ("wan_vace", False): (1.0, *_WAN_T2V_14B),
    ("wan_i2v", False): (1.0, *_WAN_I2V_480P),
    ("wan_t2v", True): (1.0, *_WAN22_T2V), ("wan_vace", True): (1.0, *_WAN22_T2V),
    ("wan_i2v", True): (1.0, *_WAN22_I2V),
}
# WanGP's TeaCache polynomials (highest power first) over the relative L1 distance of the timestep
# embedding; WanGP calibrated them on Wan 2.1 (no Wan 2.2 set exists: its experts, same architecture as
# 2.1 14B, use the 14B ones here).
TEA_COEFFICIENTS = {
    "t2v_1.3B": (2.39676752e+03, -1.31110545e+03, 2.01331979e+02, -8.29855975e+00, 1.37887774e-01),
    "t2v_14B": (-5784.54975374, 5449.50911966, -1811.16591783, 256.27178429, -13.02252404),
    "i2v_480p": (-3.02331670e+02, 2.23948934e+02, -5.25463970e+01, 5.87348440e+00, -2.01973289e-01),
    "i2v_720p": (-114.36346466, 65.26524496, -18.82220707, 4.91518089, -0.23412683),
}
# Width of the 1.3B Wan transformer (12 heads of 128); the 14B ones are 5120 wide.
_WAN_1_3B_WIDTH = 1536
_THRESHOLDS = np.arange(0.01, 0.6001, 0.01)


@dataclass(frozen=True)
class CachePlan:
    cache_type: str
    threshold: float
    start_step: int
    # Per denoising step: True where the transformer's blocks run.
    computed: tuple[bool, ...]
    # First step of each denoiser (0, and the switch step for two-expert models).
    expert_starts: tuple[int, ...]
    coefficients: str | None = None

    @property
    def planned_full_steps(self) -> int:
        return sum(self.computed)

    def segment(self, expert: int) -> tuple[bool, ...]:
        bounds = (*self.expert_starts, len(self.computed))
        return self.computed[bounds[expert]:bounds[expert + 1]]


# -- the two decision rules: one expert's steps, its signal per step, the threshold, the first skippable step

def simulate_mag(ratios: Sequence[float], threshold: float, start_step: int) -> list[bool]:
    """diffusers' MagCache rule: skip while the accumulated error of the ratio product stays ≤ threshold."""
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


def simulate_tea(distances: Sequence[float], threshold: float, start_step: int) -> list[bool]:
    """WanGP's TeaCache rule: skip while the accumulated rescaled distance stays < threshold."""
    computed, accumulated = [], 0.0
    for index, distance in enumerate(distances):
        compute = True
        if index >= start_step and index > 0:
            accumulated += distance
            if accumulated < threshold:
                compute = False
            else:
                accumulated = 0.0
        else:
            accumulated = 0.0
        computed.append(compute)
    return computed


RULES: dict[str, Callable[[Sequence[float], float, int], list[bool]]] = {"mag": simulate_mag, "tea": simulate_tea}


def interpolate(ratios: Sequence[float], steps: int) -> tuple[float, ...]:
    """WanGP's nearest-neighbour resampling of a ratio table to ``steps`` entries."""
    source = np.asarray(ratios)
    if steps == 1:
        return (float(source[-1]),)
    index = np.round(np.arange(steps) * (len(source) - 1) / (steps - 1)).astype(int)
    return tuple(float(r) for r in source[index])


def plan(cache_type: str, signals: Sequence[float], expert_starts: Sequence[int], multiplier: float,
         start_perc: float, *, coefficients: str | None = None) -> CachePlan:
    """The threshold whose simulated full passes come closest to ``steps / multiplier`` (the lowest on a
    tie), each expert simulated on its own steps with its own fresh state."""
    steps = len(signals)
    start_step = max(FIRST_SKIPPABLE_STEP, int(start_perc / 100 * steps + 0.5))
    bounds = (*expert_starts, steps)
    rule = RULES[cache_type]

    def simulate(threshold: float) -> tuple[bool, ...]:
        computed: list[bool] = []
        for first, end in zip(bounds, bounds[1:], strict=False):
            computed += rule(signals[first:end], threshold, max(FIRST_SKIPPABLE_STEP, start_step - first))
        return tuple(computed)

    target = steps / multiplier
    best = min((abs(sum(simulate(float(t))) - target), round(float(t), 4)) for t in _THRESHOLDS)
    threshold = best[1]
    return CachePlan(cache_type, threshold, start_step, simulate(threshold), tuple(expert_starts), coefficients)


# -- the signals, from the loaded pipeline and this call's schedule

def schedule(pipe, steps: int) -> tuple[list[float], tuple[int, ...]]:
    """The call's timesteps (the pipeline's scheduler, already set to this row's solver and shift) and the
    first step of each expert (a two-expert pipeline switches below ``boundary_ratio``)."""
    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(steps, device="cpu")
    timesteps = [float(t) for t in scheduler.timesteps[:steps]]
    boundary = getattr(pipe.config, "boundary_ratio", None)
    if boundary is None or len(_denoisers(pipe)) < 2:
        return timesteps, (0,)
    # Either expert may have no step at all (a very low or high boundary): its segment is empty.
    return timesteps, (0, sum(t >= boundary * scheduler.config.num_train_timesteps for t in timesteps))


def mag_signals(architecture: str, steps: int, two_experts: bool) -> tuple[float, ...]:
    return interpolate(MAG_RATIOS[(architecture, two_experts)], steps)


def tea_coefficients(architecture: str, model: torch.nn.Module, params: GenerationParams) -> str:
    """WanGP's built-in choice: image-to-video by resolution, text-to-video (and VACE) by model size."""
    if architecture == "wan_i2v":
        return "i2v_720p" if params.width * params.height >= 1280 * 720 else "i2v_480p"
    config = model.config
    return "t2v_1.3B" if config.num_attention_heads * config.attention_head_dim <= _WAN_1_3B_WIDTH else "t2v_14B"


@torch.no_grad()
def tea_signals(models: Sequence[torch.nn.Module], timesteps: Sequence[float], expert_starts: Sequence[int],
                coefficients: Sequence[float]) -> tuple[float, ...]:
    """Per step: |poly(relative L1 distance of this step's timestep embedding from the previous one's)|,
    each embedding from the expert that runs the step; the first step has none (0)."""
    rescale = np.poly1d(coefficients)
    embeddings = []
    for index, t in enumerate(timesteps):
        embedder = models[sum(index >= first for first in expert_starts) - 1].condition_embedder
        weight = next(embedder.time_embedder.parameters())
        # Offloaded weights may sit on the meta device; their hooks move a CPU input where they run.
        device = torch.device("cpu") if weight.device.type == "meta" else weight.device
        projected = embedder.timesteps_proj(torch.tensor([t], device=device))
        embeddings.append(embedder.time_embedder(projected.to(weight.dtype)).float())
    distances = [0.0]
    for previous, current in zip(embeddings, embeddings[1:], strict=False):
        relative = ((current - previous).abs().mean() / previous.abs().mean()).item()
        distances.append(abs(float(rescale(relative))))
    return tuple(distances)


# -- the hooks

class _CacheState(BaseState):
    """One denoiser's cache in one context (cond/uncond): its step, its last residual, this call's choice."""

    def __init__(self) -> None:
        self.step = 0
        self.residual: torch.Tensor | None = None
        self.blocks_input: torch.Tensor | None = None
        self.skip: bool | None = None  # None until the first hooked block of the call decides

    def reset(self) -> None:
        self.__init__()


class _Cache:
    """The plan of one denoiser and its per-context state, shared by the hooks on its modules."""

    def __init__(self, computed: Sequence[bool]) -> None:
        self.computed = tuple(computed)
        self.states = StateManager(_CacheState)

    def state(self) -> _CacheState:
        if self.states._context is None:
            self.states.set_context(CacheContext(name="inference"))
        return self.states.get_state()

    def skipping(self, hidden_states: torch.Tensor) -> bool:
        """Decided once per call, by the first hooked block to run: the plan says skip and the last full
        pass left a residual of this call's shape (with batched guidance an expert's first step runs
        its halves apart, so its residual has half the batch of the next step's)."""
        state = self.state()
        if state.skip is None:
            residual = state.residual
            state.skip = (state.step < len(self.computed) and not self.computed[state.step]
                          and residual is not None and residual.shape == hidden_states.shape)
        return state.skip


class _StepHook(ModelHook):
    """On the denoiser: one call is one step of its context."""

    _is_stateful = True

    def __init__(self, cache: _Cache) -> None:
        super().__init__()
        self.cache = cache
        self.state_manager = cache.states  # so that diffusers' cache_context reaches it

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state = self.cache.state()
        state.skip = None
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            state.step += 1
            state.blocks_input = None

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.state_manager.reset()
        return module


class _FirstBlockHook(ModelHook):
    """Keeps the blocks' input; on a skipped step answers with it plus the last full pass's residual."""

    def __init__(self, cache: _Cache) -> None:
        super().__init__()
        self.cache = cache

    def new_forward(self, module: torch.nn.Module, hidden_states: torch.Tensor, *args, **kwargs):
        state = self.cache.state()
        state.blocks_input = hidden_states
        if self.cache.skipping(hidden_states):
            return hidden_states + state.residual
        return self.fn_ref.original_forward(hidden_states, *args, **kwargs)


class _PassThroughHook(ModelHook):
    """The other blocks: their input unchanged on a skipped step."""

    def __init__(self, cache: _Cache) -> None:
        super().__init__()
        self.cache = cache

    def new_forward(self, module: torch.nn.Module, hidden_states: torch.Tensor, *args, **kwargs):
        if self.cache.state().skip:
            return hidden_states
        return self.fn_ref.original_forward(hidden_states, *args, **kwargs)


class _VaceHintHook(ModelHook):
    """VACE's control blocks (run before the main blocks, their hints added between them): no hint on a
    skipped step, since the residual already holds what the hints added in the last full pass."""

    def __init__(self, cache: _Cache) -> None:
        super().__init__()
        self.cache = cache

    def new_forward(self, module: torch.nn.Module, hidden_states: torch.Tensor, encoder_hidden_states,
                    control_hidden_states: torch.Tensor, *args, **kwargs):
        if self.cache.skipping(hidden_states):
            return torch.zeros_like(hidden_states), control_hidden_states
        return self.fn_ref.original_forward(hidden_states, encoder_hidden_states, control_hidden_states,
                                            *args, **kwargs)


class _ResidualHook(ModelHook):
    """On the output norm (its input: the hidden states after every block and hint): after a full pass,
    keep what the blocks added."""

    def __init__(self, cache: _Cache) -> None:
        super().__init__()
        self.cache = cache

    def new_forward(self, module: torch.nn.Module, hidden_states: torch.Tensor, *args, **kwargs):
        state = self.cache.state()
        if not state.skip and state.blocks_input is not None:
            state.residual = (hidden_states - state.blocks_input).to(state.blocks_input.dtype)
        return self.fn_ref.original_forward(hidden_states, *args, **kwargs)


_HOOK = "planned_step_cache"


def _hooked_modules(model: torch.nn.Module, cache: _Cache) -> list[tuple[torch.nn.Module, ModelHook]]:
    blocks = list(model.blocks)
    return [(model, _StepHook(cache)), (blocks[0], _FirstBlockHook(cache)),
            *((block, _PassThroughHook(cache)) for block in blocks[1:]),
            *((block, _VaceHintHook(cache)) for block in getattr(model, "vace_blocks", ())),
            (model.norm_out, _ResidualHook(cache))]


def attach(model: torch.nn.Module, computed: Sequence[bool]) -> None:
    for module, hook in _hooked_modules(model, _Cache(computed)):
        HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, _HOOK)
    HookRegistry.check_if_exists_or_initialize(model).invalidate_child_registries_cache()


def detach(model: torch.nn.Module) -> None:
    for module in (model, *model.blocks, *getattr(model, "vace_blocks", ()), model.norm_out):
        HookRegistry.check_if_exists_or_initialize(module).remove_hook(_HOOK, recurse=False)
    HookRegistry.check_if_exists_or_initialize(model).invalidate_child_registries_cache()


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
    for model in _denoisers(pipe):
        if getattr(model, "_cache_config", None) is not None:
            raise InvalidParams("params.skip_steps_cache_type: this model's definition already enables a step cache "
                                "(engine.first_block_cache); leave skip_steps_cache_type empty")


def plan_for(pipe, params: GenerationParams, architecture: str,
             definition_coefficients: Sequence[float] | None = None) -> CachePlan:
    """``definition_coefficients``: the model definition's own TeaCache calibration, if it has one."""
    steps = params.num_inference_steps
    models = _denoisers(pipe)
    timesteps, expert_starts = schedule(pipe, steps)
    if params.skip_steps_cache_type == "mag":
        signals = mag_signals(architecture, steps, len(models) > 1)
        coefficients = None
    else:
        coefficients = "model definition" if definition_coefficients else tea_coefficients(architecture, models[0],
                                                                                             params)
        signals = tea_signals(models, timesteps, expert_starts,
                              definition_coefficients or TEA_COEFFICIENTS[coefficients])
        # WanGP's TeaCache always computes the last step.
        signals = (*signals[:-1], math.inf) if steps > 1 else signals
    return plan(params.skip_steps_cache_type, signals, expert_starts, params.skip_steps_multiplier,
                params.skip_steps_start_step_perc, coefficients=coefficients)


_IMPLEMENTATION = {"mag": "MagCache (WanGP magnitude ratios)", "tea": "TeaCache (WanGP polynomial)"}


@contextmanager
def step_cache(pipe, params: GenerationParams, architecture: str,
               teacache_coefficients: Sequence[float] | None = None) -> Iterator[dict[str, Any] | None]:
    """The planned cache on the denoisers for one call (when asked), and the pass count; yields the dict
    that the row's ``result.step_cache`` gets (filled when the call ends), or None when none was asked for."""
    if not params.skip_steps_cache_type:
        yield None
        return
    cache_plan = plan_for(pipe, params, architecture, teacache_coefficients)
    models = _denoisers(pipe)
    counter = PassCounter()
    report: dict[str, Any] = {
        "type": cache_plan.cache_type, "implementation": _IMPLEMENTATION[cache_plan.cache_type],
        "multiplier": params.skip_steps_multiplier, "start_step_perc": params.skip_steps_start_step_perc,
        "start_step": cache_plan.start_step, "threshold": cache_plan.threshold,
        "planned_full_steps": cache_plan.planned_full_steps, "steps": params.num_inference_steps,
        "skipped_steps": [step for step, computed in enumerate(cache_plan.computed) if not computed],
        **({"coefficients": cache_plan.coefficients} if cache_plan.coefficients else {}),
        **({"expert_switch_step": cache_plan.expert_starts[1]} if len(cache_plan.expert_starts) > 1 else {}),
    }
    attached = []
    try:
        for expert, model in enumerate(models):
            attach(model, cache_plan.segment(expert))
            attached.append(model)
        for model in models:
            counter.attach(model)
        yield report
    finally:
        for model in attached:
            detach(model)
        counter.detach()
        report.update(counter.summary())
        log.info("step_cache_applied", **report)


def _denoisers(pipe) -> list[torch.nn.Module]:
    from source.engine.speed import denoisers

    return denoisers(pipe)
