"""WanGP's guidance phases on a diffusers Wan pipeline: 2 or 3 phases of denoising steps, each with its own
guidance scale and its own LoRA multipliers, and on a two-expert (Wan 2.2) model the switch from the
high-noise to the low-noise expert at a phase boundary (``model_switch_phase``).

The split, as WanGP's ``get_model_switch_steps``: phase 2 starts at the first step whose timestep is at most
``switch_threshold`` and phase 3 at the first one at most ``switch_threshold2``; ``steps_per_phase`` (Reigh's
``phase_config``) gives the split in steps instead, exactly. Guidance per phase is ``guidance_scale``,
``guidance2_scale``, ``guidance3_scale``; a LoRA multiplier ``"a;b;c"`` gives one value per phase (WanGP pads a
two-value form on a three-phase plan: the first value twice when the model switches at phase 2, else the last).

diffusers' Wan pipelines pick the expert per step by ``config.boundary_ratio`` and combine the two passes as
``u + s * (c - u)`` with one scale per expert. So for one call: the boundary is set between the last step of
the high-noise phases and the first of the others; the call runs with a fixed carrier scale ``s`` (2, or 1 when
no phase guides, so no unconditional pass runs at all), and a hook on each expert returns for the
unconditional pass the ``u'`` that makes that line give the phase's ``u + g * (c - u)``; a phase with ``g == 1``
skips its unconditional pass (it returns ``c``). The step callback switches LoRA multipliers when a phase ends.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import StateManager

from source.engine.guidance_batching import _ContextOnly, hook_of
from source.engine.params import GenerationParams, LoraWeight, PhaseWeight
from source.errors import InvalidParams

log = structlog.get_logger(__name__)

HOOK_NAME = "guidance_phases"
CARRIER_SCALE = 2.0
EXPERT_NAMES = {"transformer": "high_noise", "transformer_2": "low_noise"}


@dataclass(frozen=True)
class Phase:
    number: int
    first_step: int
    steps: int
    expert: str  # the pipeline component that denoises this phase
    guidance: float

    @property
    def step_range(self) -> range:
        return range(self.first_step, self.first_step + self.steps)


@dataclass(frozen=True)
class PhasePlan:
    phases: tuple[Phase, ...]
    # Per LoRA (in activated_loras order): one multiplier (or a ramp over its steps) per phase.
    lora_weights: tuple[LoraWeight, ...]
    two_experts: bool

    @property
    def total_steps(self) -> int:
        return sum(phase.steps for phase in self.phases)

    def phase_at(self, step: int) -> Phase:
        return next(phase for phase in self.phases if step in phase.step_range)

    @property
    def high_noise_steps(self) -> int:
        return sum(phase.steps for phase in self.phases if phase.expert == "transformer")

    @property
    def guides(self) -> bool:
        return any(phase.guidance != 1.0 for phase in self.phases if phase.steps)

    def multipliers(self, phase: Phase) -> tuple[PhaseWeight, ...]:
        return tuple(weights[phase.number - 1] for weights in self.lora_weights)

    @property
    def has_ramps(self) -> bool:
        return any(isinstance(w, tuple) for weights in self.lora_weights for w in weights)

    def multipliers_at(self, step: int) -> tuple[float, ...]:
        """Each LoRA's multiplier at ``step``: its phase's value, or the ramp's value for that step (WanGP
        spreads a ramp of n values over the phase's steps: step i of s takes value int(i * n / s))."""
        phase = self.phase_at(step)
        at = step - phase.first_step
        return tuple(w[int(at * len(w) / phase.steps)] if isinstance(w, tuple) else w
                     for w in self.multipliers(phase))

    def describe(self, lora_names: Sequence[str]) -> dict[str, Any]:
        """The plan as the row's ``result.phases`` shows it."""
        return {
            "count": len(self.phases),
            "steps_per_phase": [phase.steps for phase in self.phases],
            **({"expert_switch_step": self.high_noise_steps} if self.two_experts else {}),
            "phases": [{
                "phase": phase.number,
                "steps": [phase.first_step, phase.first_step + phase.steps],
                "expert": EXPERT_NAMES[phase.expert] if self.two_experts else "transformer",
                "guidance_scale": phase.guidance,
                "loras": dict(zip(lora_names, (list(w) if isinstance(w, tuple) else w
                                               for w in self.multipliers(phase)), strict=True)),
            } for phase in self.phases],
        }


def asks_for_phases(params: GenerationParams) -> bool:
    return params.guidance_phases is not None or params.steps_per_phase is not None


def plan_phases(params: GenerationParams, timesteps: Sequence[float], *, two_experts: bool,
                boundary_timestep: float | None) -> PhasePlan | None:
    """The plan for one call, or None when the row asks for no phases (the model's own single split)."""
    if not asks_for_phases(params):
        return None
    total = params.num_inference_steps
    count = params.guidance_phases or len(params.steps_per_phase or ())
    if params.steps_per_phase is not None:
        steps = params.steps_per_phase
        if len(steps) != count:
            raise InvalidParams(f"steps_per_phase {list(steps)} has {len(steps)} phases but guidance_phases is {count}")
        if sum(steps) != total:
            raise InvalidParams(f"steps_per_phase {list(steps)} sums to {sum(steps)}, but num_inference_steps is {total}")
        bounds = [sum(steps[:i]) for i in range(1, count)]
    else:
        bounds = _bounds_from_thresholds(params, count, timesteps, two_experts, boundary_timestep)
    edges = [0, *bounds, total]
    guidance = [params.guidance_scale]
    guidance.append(params.guidance2_scale if params.guidance2_scale is not None else guidance[0])
    guidance.append(params.guidance3_scale if params.guidance3_scale is not None else guidance[1])
    phases = tuple(
        Phase(number=i + 1, first_step=edges[i], steps=edges[i + 1] - edges[i],
              expert="transformer" if not two_experts or i + 1 <= params.model_switch_phase else "transformer_2",
              guidance=guidance[i])
        for i in range(count)
    )
    weights = tuple(_phase_weights(name, weight, count, params.model_switch_phase)
                    for name, weight in zip(params.activated_loras, params.loras_multipliers, strict=True))
    return PhasePlan(phases, weights, two_experts)


def _bounds_from_thresholds(params: GenerationParams, count: int, timesteps: Sequence[float], two_experts: bool,
                            boundary_timestep: float | None) -> list[int]:
    total = len(timesteps)

    def first_at_most(threshold: float) -> int:
        return next((i for i, t in enumerate(timesteps) if t <= threshold), total)

    if count == 1:
        return []
    if params.switch_threshold is not None:
        first = first_at_most(params.switch_threshold)
    elif two_experts and boundary_timestep is not None:
        first = next((i for i, t in enumerate(timesteps) if t < boundary_timestep), total)
    else:
        raise InvalidParams(f"guidance_phases {count} needs switch_threshold (a timestep 0-1000) or steps_per_phase")
    if count == 2:
        return [first]
    if params.switch_threshold2 is None:
        raise InvalidParams("guidance_phases 3 needs switch_threshold2 (a timestep 0-1000) or steps_per_phase")
    second = first_at_most(params.switch_threshold2)
    if second < first:
        raise InvalidParams(f"switch_threshold2 {params.switch_threshold2:g} must not be above switch_threshold "
                            f"{params.switch_threshold:g} (phase 3 follows phase 2)")
    return [first, second]


def _phase_weights(name: str, weight: LoraWeight, count: int, model_switch_phase: int) -> LoraWeight:
    if len(weight) == 1:
        return weight * count
    if len(weight) == count:
        return weight
    if len(weight) > count:
        raise InvalidParams(f"loras_multipliers of {name!r}: {weight!r} has {len(weight)} phases, the generation "
                            f"has {count}")
    return (weight[0], *weight) if model_switch_phase == 2 else (*weight, weight[-1])


def two_expert_pipeline(pipe) -> bool:
    return (getattr(pipe, "transformer_2", None) is not None
            and getattr(pipe.config, "boundary_ratio", None) is not None)


def pipeline_timesteps(pipe, steps: int) -> list[float]:
    """The timesteps the pipeline's scheduler will run for ``steps`` (a copy is set, the pipeline's is untouched)."""
    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(steps, device="cpu")
    return [float(t) for t in scheduler.timesteps]


@dataclass
class _State:
    step: int = 0
    phase: Phase | None = None
    # What the denoisers saw, per step: the expert that ran and each LoRA's multiplier in its layers.
    seen: dict[int, dict[str, Any]] = field(default_factory=dict)
    unconditional_passes: int = 0


class PhaseGuidanceHook(ModelHook):
    """On one expert: records what ran, and turns the carrier scale's combination into the phase's."""

    _is_stateful = True

    def __init__(self, expert: str, state: _State, adapters: Sequence[str]) -> None:
        super().__init__()
        self.state_manager = StateManager(_ContextOnly)
        self.expert, self.state, self.adapters = expert, state, tuple(adapters)
        self._cond: Any = None

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self._cond = None
        return module

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        context = self.state_manager._context
        name = context.name if context is not None else None
        phase = self.state.phase
        if name == "uncond" and phase is not None and phase.guidance == 1.0 and self._cond is not None:
            return self._cond  # u' = c: the line gives c, with no second pass
        output = self.fn_ref.original_forward(*args, **kwargs)
        if name == "cond":
            self.state.seen[self.state.step] = {"expert": self.expert, "loras": _multipliers_in(module, self.adapters)}
            self._cond = output
        elif name == "uncond" and phase is not None and self._cond is not None:
            self.state.unconditional_passes += 1
            cond, uncond = _sample(self._cond), _sample(output)
            guided = uncond + phase.guidance * (cond - uncond)
            output = _with_sample(output, (guided - CARRIER_SCALE * cond) / (1.0 - CARRIER_SCALE))
        return output


def _sample(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output.sample


def _with_sample(output, sample: torch.Tensor):
    return (sample, *output[1:]) if isinstance(output, tuple) else type(output)(sample=sample)


def _multipliers_in(model: torch.nn.Module, adapters: Sequence[str]) -> list[float]:
    """Each adapter's multiplier as the first LoRA layer of ``model`` holds it (peft: scaling = m * alpha / r)."""
    if not adapters:
        return []
    for module in model.modules():
        scaling = getattr(module, "scaling", None)
        if isinstance(scaling, dict) and all(a in scaling for a in adapters):
            active = set(getattr(module, "active_adapters", adapters))
            return [round(float(scaling[a]) * module.r[a] / module.lora_alpha[a], 6) if a in active else 0.0
                    for a in adapters]
    return []


class PhaseDriver:
    """Runs one plan over the calls of one generation (each sliding window is a call of its own)."""

    def __init__(self, pipe, plan: PhasePlan, loras: Any, params: GenerationParams) -> None:
        self.pipe, self.plan, self.loras, self.params = pipe, plan, loras, params
        self.state = _State()
        self._batched = [hook for hook in (hook_of(getattr(pipe, name)) for name in self._experts()) if hook]

    def _experts(self) -> tuple[str, ...]:
        return tuple(name for name in ("transformer", "transformer_2") if getattr(self.pipe, name, None) is not None)

    def call_kwargs(self) -> dict[str, Any]:
        scale = CARRIER_SCALE if self.plan.guides else 1.0
        return {"guidance_scale": scale, **({"guidance_scale_2": scale} if self.plan.two_experts else {})}

    def enter_step(self, step: int) -> None:
        phase = self.plan.phase_at(step)
        self.state.step = step
        if phase != self.state.phase or self.plan.has_ramps:
            self.loras.set_multipliers(self.plan.multipliers_at(step))
        if phase != self.state.phase:
            self.state.phase = phase
            for hook in self._batched:  # one batched pass only where both passes run
                hook.enabled = phase.guidance != 1.0 and not self.params.slg_switch

    def on_step_end(self, step: int) -> None:
        self.enter_step((step + 1) % self.plan.total_steps)

    def report(self, lora_names: Sequence[str]) -> dict[str, Any]:
        described = self.plan.describe(lora_names)
        for entry, phase in zip(described["phases"], self.plan.phases, strict=True):
            seen = [self.state.seen[s] for s in phase.step_range if s in self.state.seen]
            entry["ran"] = {
                "experts": sorted({EXPERT_NAMES[s["expert"]] if self.plan.two_experts else s["expert"] for s in seen}),
                "lora_multipliers_seen": [dict(zip(lora_names, s["loras"], strict=False)) for s in seen],
            }
        described["unconditional_passes"] = self.state.unconditional_passes
        return described


def check_combination(params: GenerationParams) -> None:
    """Features whose own guidance hooks assume one scale per expert (refused, not mixed)."""
    clashes = [name for name, on in (("cfg_star_switch", params.cfg_star_switch), ("apg_switch", params.apg_switch),
                                     ("skip_steps_cache_type", params.skip_steps_cache_type)) if on]
    if clashes:
        raise InvalidParams(f"{', '.join(clashes)} cannot be combined with guidance phases (guidance_phases / "
                            f"steps_per_phase / phase_config) here; leave {'them' if len(clashes) > 1 else 'it'} out")


@contextmanager
def guidance_phases(pipe, plan: PhasePlan | None, loras: Any, params: GenerationParams) -> Iterator[PhaseDriver | None]:
    """The plan's hooks and expert boundary for the block; yields the driver (None without a plan)."""
    if plan is None:
        yield None
        return
    driver = PhaseDriver(pipe, plan, loras, params)
    original_ratio = pipe.config.boundary_ratio if plan.two_experts else None
    registries = []
    try:
        if plan.two_experts:
            pipe.register_to_config(boundary_ratio=_boundary_ratio(pipe, plan))
        for name in driver._experts():
            registry = HookRegistry.check_if_exists_or_initialize(getattr(pipe, name))
            registry.register_hook(PhaseGuidanceHook(name, driver.state, loras.adapters), HOOK_NAME)
            registries.append(registry)
        driver.enter_step(0)
        yield driver
    finally:
        for registry in registries:
            registry.remove_hook(HOOK_NAME, recurse=False)
        for hook in driver._batched:
            hook.enabled = True
        if plan.two_experts:
            pipe.register_to_config(boundary_ratio=original_ratio)
        log.info("guidance_phases_ran", steps_per_phase=[p.steps for p in plan.phases],
                 guidance=[p.guidance for p in plan.phases], unconditional_passes=driver.state.unconditional_passes)


def _boundary_ratio(pipe, plan: PhasePlan) -> float:
    """The pipeline's ``t >= boundary`` keeps the high-noise expert for exactly the plan's high-noise steps."""
    timesteps = pipeline_timesteps(pipe, plan.total_steps)
    train = pipe.scheduler.config.num_train_timesteps
    switch = plan.high_noise_steps
    if switch >= len(timesteps):
        return 0.0
    if switch == 0:
        return (timesteps[0] + 1.0) / train
    return (timesteps[switch - 1] + timesteps[switch]) / 2.0 / train


def phase_plan_for(family: Any, pipe, params: GenerationParams) -> PhasePlan | None:
    """The plan one generation runs on ``pipe`` (after its solver is set), checked against the family."""
    if not asks_for_phases(params):
        return None
    if not getattr(family, "takes_phases", False):
        raise InvalidParams("guidance_phases / steps_per_phase / phase_config are Wan settings; this model "
                            "has no guidance phases")
    check_combination(params)
    two = two_expert_pipeline(pipe)
    boundary = pipe.config.boundary_ratio * pipe.scheduler.config.num_train_timesteps if two else None
    return plan_phases(params, pipeline_timesteps(pipe, params.num_inference_steps), two_experts=two,
                       boundary_timestep=boundary)
