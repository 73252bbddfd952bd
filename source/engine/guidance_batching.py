"""Classifier-free guidance in one forward: the conditional and unconditional passes of a denoising step
run as a single batch of two, on an unmodified diffusers pipeline.

Wan pipelines call the transformer twice per step, first inside ``cache_context("cond")`` and then inside
``cache_context("uncond")`` with the same latents, timestep and conditioning tensors (the same objects)
and only ``encoder_hidden_states`` swapped for the negative prompt's. This hook learns the negative
embeddings from the first unconditional call of a generation; from then on the conditional call runs
both halves in one batch and keeps the unconditional half, and the unconditional call that follows is
answered from it, but only after checking that every input is the very object the batch was built from.
Any mismatch (a callback that replaced a tensor, a different negative) makes that call run on its own, so
the result is always the plain path's up to the floating-point noise of a larger matrix product. A batch
that runs out of accelerator memory is retried as single passes, as is every later one at least as large.
"""

from __future__ import annotations

from typing import Any

import structlog
import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

log = structlog.get_logger(__name__)

HOOK_NAME = "batched_guidance"
# Inputs whose first dimension is the batch: repeated for the second half of the batch.
_PER_SAMPLE = ("hidden_states", "timestep", "encoder_hidden_states_image", "control_hidden_states")


class _ContextOnly(BaseState):
    """Nothing to keep per context; the StateManager is only how diffusers tells a hook cond from uncond."""

    def reset(self) -> None:
        pass


class BatchedGuidanceHook(ModelHook):
    _is_stateful = True

    def __init__(self) -> None:
        super().__init__()
        self.state_manager = StateManager(_ContextOnly)
        self.batched_steps = 0
        # Latent size (elements) of the smallest generation whose batch ran out of memory: only smaller batch.
        self.too_large_from: int | None = None
        self._negative: torch.Tensor | None = None
        # Off while a generation needs its two passes to differ in more than the prompt (skip-layer guidance).
        self.enabled = True
        self._pending: tuple[dict[str, Any], Any] | None = None

    # -- diffusers hook protocol
    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self._negative = None
        self._pending = None
        return module

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        context = self.state_manager._context
        name = context.name if context is not None else None
        original = self.fn_ref.original_forward
        if args or name not in ("cond", "uncond"):
            return original(*args, **kwargs)
        if name == "uncond":
            return self._uncond(original, kwargs)
        return self._cond(original, kwargs)

    # -- the two calls of a step
    def _cond(self, forward, kwargs: dict[str, Any]):
        self._pending = None
        positive = kwargs.get("encoder_hidden_states")
        negative = self._negative
        if not self.enabled or negative is None or positive is None or negative.shape != positive.shape or self._too_large(kwargs):
            return forward(**kwargs)
        batched = dict(kwargs)
        batched["encoder_hidden_states"] = torch.cat([positive, negative])
        for key in _PER_SAMPLE:
            value = kwargs.get(key)
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                batched[key] = torch.cat([value, value])
        try:
            output = forward(**batched)
        except torch.OutOfMemoryError:
            # Twice the activations did not fit: generations this large run their passes one at a time.
            del batched
            self.too_large_from = _latent_size(kwargs)
            log.warning("batched_guidance_out_of_memory", latent_elements=self.too_large_from,
                        fallback="one pass at a time for generations this large")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return forward(**kwargs)
        conditional, unconditional = _split_halves(output)
        self._pending = ({**kwargs, "encoder_hidden_states": negative}, unconditional)
        self.batched_steps += 1
        return conditional

    def _too_large(self, kwargs: dict[str, Any]) -> bool:
        return self.too_large_from is not None and _latent_size(kwargs) >= self.too_large_from

    def _uncond(self, forward, kwargs: dict[str, Any]):
        pending, self._pending = self._pending, None
        if pending is not None and _same_inputs(pending[0], kwargs):
            return pending[1]
        self._negative = kwargs.get("encoder_hidden_states")
        return forward(**kwargs)


def _latent_size(kwargs: dict[str, Any]) -> int:
    latents = kwargs.get("hidden_states")
    return latents.numel() if isinstance(latents, torch.Tensor) else 0


def _same_inputs(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    if expected.keys() != actual.keys():
        return False
    for key, value in actual.items():
        if isinstance(value, torch.Tensor) or isinstance(expected[key], torch.Tensor):
            if value is not expected[key]:
                return False
        elif value != expected[key]:
            return False
    return True


def _split_halves(output):
    """The transformer's output (a tuple with return_dict=False, else an output dataclass) → two halves."""
    if isinstance(output, tuple):
        sample, *rest = output
        first, second = sample.chunk(2)
        return (first, *rest), (second, *rest)
    first, second = output.sample.chunk(2)
    return type(output)(sample=first), type(output)(sample=second)


def enable(model: torch.nn.Module) -> BatchedGuidanceHook:
    registry = HookRegistry.check_if_exists_or_initialize(model)
    existing = registry.get_hook(HOOK_NAME)
    if existing is not None:
        return existing
    hook = BatchedGuidanceHook()
    registry.register_hook(hook, HOOK_NAME)
    return hook


def hook_of(model: torch.nn.Module) -> BatchedGuidanceHook | None:
    registry = getattr(model, "_diffusers_hook", None)
    return registry.get_hook(HOOK_NAME) if registry is not None else None
