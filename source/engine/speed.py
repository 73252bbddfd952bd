"""Speed options applied to a freshly loaded pipeline, from the model definition's ``engine`` section.

Lossless, on by default where safe: classifier-free guidance batched into one forward (``batch_cfg``)
and the fastest exact attention kernel the machine has (``attention: "auto"``). ``compile`` (regional
compile of the repeated blocks) is opt-in: it pays off only after a warm-up.
Lossy, never on by default: ``first_block_cache`` (diffusers' first-block step caching, the threshold
trades quality for speed) and ``fp8`` (weights stored as float8, computed in the model's dtype).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import structlog
import torch

from source.engine import guidance_batching
from source.engine.loras import expert_components
from source.engine.model_defs import EngineOptions

log = structlog.get_logger(__name__)

# Exact-attention kernels only (sage and other quantised kernels change results, so "auto" never picks them),
# in the order tried; each is used only when diffusers reports its package usable on this machine.
_EXACT_CUDA_BACKENDS = ("_flash_3", "flash", "_native_cudnn", "_native_flash", "native")
_chosen: dict[tuple, str] = {}


def denoisers(pipe) -> list[torch.nn.Module]:
    return [getattr(pipe, name) for name in expert_components(pipe)]


def usable_attention_backends(device: torch.device) -> list[str]:
    if device.type != "cuda":
        return ["native"]
    from diffusers.models.attention_dispatch import (
        AttentionBackendName,
        _check_attention_backend_requirements,
    )

    usable = []
    for name in _EXACT_CUDA_BACKENDS:
        try:
            _check_attention_backend_requirements(AttentionBackendName(name))
        except (RuntimeError, ValueError):
            continue
        usable.append(name)
    return usable


def fastest(candidates: Iterable[str], seconds_for: Callable[[str], float]) -> str:
    """The candidate with the smallest measured time; one that fails to run is skipped."""
    timings = {}
    for name in candidates:
        try:
            timings[name] = seconds_for(name)
        except Exception as exc:  # a kernel that cannot take this shape/dtype is simply not a candidate
            log.info("attention_backend_unusable", backend=name, error=str(exc)[:200])
    if not timings:
        return "native"
    log.info("attention_backends_timed", **{name: round(s * 1e3, 3) for name, s in timings.items()})
    return min(timings, key=timings.get)


def _attention_timer(heads: int, head_dim: int, dtype: torch.dtype, device: torch.device,
                     tokens: int = 8192) -> Callable[[str], float]:
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    q, k, v = (torch.randn(1, tokens, heads, head_dim, dtype=dtype, device=device) for _ in range(3))

    def seconds_for(backend: str) -> float:
        run = lambda: dispatch_attention_fn(q, k, v, backend=backend)  # noqa: E731
        run()
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        for _ in range(5):
            run()
        torch.cuda.synchronize(device)
        return (time.perf_counter() - started) / 5

    return seconds_for


def auto_attention_backend(model: torch.nn.Module, device: torch.device) -> str:
    """Time each usable exact kernel on this model's head shape once per process and device; keep the fastest."""
    candidates = usable_attention_backends(device)
    if len(candidates) == 1:
        return candidates[0]
    config = model.config
    dtype = next(model.parameters()).dtype
    if dtype not in (torch.float16, torch.bfloat16):
        dtype = torch.bfloat16
    key = (torch.cuda.get_device_name(device), config.num_attention_heads, config.attention_head_dim, dtype)
    if key not in _chosen:
        timer = _attention_timer(config.num_attention_heads, config.attention_head_dim, dtype, device)
        _chosen[key] = fastest(candidates, timer)
    return _chosen[key]


def set_attention(model: torch.nn.Module, choice: str | None, device: torch.device) -> str:
    """Set the definition's attention backend; one this machine cannot run (its package is missing, or no
    GPU) falls back to "auto" with a warning rather than failing every task of the model."""
    if not choice or not hasattr(model, "set_attention_backend"):
        return "default"
    if choice != "auto":
        try:
            model.set_attention_backend(choice)
            return choice
        except (RuntimeError, ValueError) as exc:
            log.warning("attention_backend_unavailable", requested=choice, error=str(exc)[:200], using="auto")
    backend = auto_attention_backend(model, device)
    model.set_attention_backend(backend)
    return backend


def apply_speed_options(pipe, options: EngineOptions, device: torch.device | None = None) -> dict[str, object]:
    """Apply ``options`` to every denoiser; returns what is in effect (logged, and shown by the benchmarks)."""
    device = device or (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    in_effect: dict[str, object] = {}
    batched_cfg = False
    for model in denoisers(pipe):
        in_effect["attention"] = set_attention(model, options.attention, device)
        if options.fp8:
            # Weights stored in float8 and upcast per layer to the model's dtype; norms and embeddings stay.
            model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=model.dtype)
        if options.first_block_cache:
            from diffusers.hooks import FirstBlockCacheConfig

            model.enable_cache(FirstBlockCacheConfig(threshold=options.first_block_cache))
        if options.batch_cfg and type(model).__name__.startswith("Wan"):
            guidance_batching.enable(model)
            batched_cfg = True
        if options.compile:
            # Regional compile of the repeated blocks: fast to compile, same numerics.
            if hasattr(model, "compile_repeated_blocks"):
                model.compile_repeated_blocks(fullgraph=False)
            else:
                model.compile()
    # What runs, not what was asked: batched guidance exists for Wan denoisers only.
    in_effect.update(batch_cfg=batched_cfg, compile=options.compile, fp8=options.fp8,
                     first_block_cache=options.first_block_cache)
    log.info("speed_options_applied", **in_effect)
    return in_effect


def reset_step_state(pipe) -> None:
    """Drop per-generation hook state (batched guidance, step caches) after a call, also one that failed."""
    for model in denoisers(pipe):
        if hasattr(model, "_reset_stateful_cache"):
            model._reset_stateful_cache()
