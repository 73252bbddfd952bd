"""Memory profiles in the spirit of WanGP ``--wgp-profile`` 1..5, applied with diffusers' own offload calls.

1: everything resident on the accelerator.   2: model CPU offload.   3: model CPU offload + VAE slicing.
4: group offload (block level) + VAE tiling.  5: sequential CPU offload + VAE tiling and slicing.
Offloading only moves weights; it never changes the arithmetic, so results stay within numerical noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
import torch

from source.engine.model_defs import EngineOptions
from source.errors import InvalidParams

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class MemoryPlan:
    profile: int
    offload: str  # "none" | "model" | "group" | "sequential"
    vae_tiling: bool
    vae_slicing: bool


_PROFILES = {
    1: ("none", False, False),
    2: ("model", False, False),
    3: ("model", False, True),
    4: ("group", True, False),
    5: ("sequential", True, True),
}


def plan_for(options: EngineOptions) -> MemoryPlan:
    if options.profile not in _PROFILES:
        raise InvalidParams(f"memory profile must be one of 1..5, got {options.profile}")
    offload, tiling, slicing = _PROFILES[options.profile]
    return MemoryPlan(options.profile, offload, tiling or options.vae_tiling, slicing or options.vae_slicing)


def accelerator() -> torch.device | None:
    return torch.device("cuda") if torch.cuda.is_available() else None


def _set_vae(pipe, *, tiling: bool, slicing: bool) -> None:
    vae = getattr(pipe, "vae", None)
    if vae is None:
        return
    if hasattr(vae, "enable_tiling"):
        vae.enable_tiling() if tiling else vae.disable_tiling()
    if hasattr(vae, "enable_slicing"):
        vae.enable_slicing() if slicing else vae.disable_slicing()


def _group_offload(pipe, device: torch.device) -> None:
    """Stream weights to the accelerator group by group: the denoisers block by block, the text encoder layer
    by layer (the UMT5-XXL encoder alone is ~11 GB). On CUDA the next group is copied on a side stream while
    the current one computes, so the transfer hides behind the arithmetic. The VAE is small and stays whole."""
    from diffusers.hooks import apply_group_offloading

    streams = device.type == "cuda"
    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        if hasattr(component, "enable_group_offload") and name != "vae":
            component.enable_group_offload(device, offload_type="block_level", num_blocks_per_group=1,
                                           use_stream=streams, record_stream=streams)
        elif name.startswith("text_encoder") or name == "image_encoder":
            apply_group_offloading(component, device, offload_type="leaf_level", use_stream=streams,
                                   record_stream=streams)
        else:
            component.to(device)


def apply_memory_plan(pipe, plan: MemoryPlan, device: torch.device | None = None) -> str:
    """Apply ``plan`` and return the offload actually in effect ("none" when there is no accelerator)."""
    _set_vae(pipe, tiling=plan.vae_tiling, slicing=plan.vae_slicing)
    device = device or accelerator()
    if device is None:
        # CPU only: nothing to offload to or from; VAE tiling/slicing still apply.
        log.info("offload_skipped", profile=plan.profile, reason="no accelerator")
        return "none"
    if plan.offload == "none":
        pipe.to(device)
    elif plan.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif plan.offload == "group":
        _group_offload(pipe, device)
    else:
        pipe.enable_sequential_cpu_offload(device=device)
    log.info("memory_plan_applied", profile=plan.profile, offload=plan.offload, device=str(device))
    return plan.offload
