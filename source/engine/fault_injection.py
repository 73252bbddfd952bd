"""Test-only fault injection for the engine: lets tests reach failure paths real hardware would need.

Never set these in production. ``WGP_TEST_OOM_PROMPT=<text>``: a generation whose prompt contains <text>
raises ``torch.OutOfMemoryError`` at its first denoising step, inside the pipeline call, as a CUDA
allocation failure would.
"""

from __future__ import annotations

import os

import torch

OOM_PROMPT_ENV = "WGP_TEST_OOM_PROMPT"


def out_of_memory_requested(prompt: str) -> bool:
    marker = os.environ.get(OOM_PROMPT_ENV)
    return bool(marker) and marker in prompt


def raise_out_of_memory() -> None:
    raise torch.OutOfMemoryError(
        f"CUDA out of memory. Tried to allocate 20.00 GiB (injected by {OOM_PROMPT_ENV}, a test hook)"
    )
