"""What this process keeps loaded beside its one resident generation model: the auxiliary models (depth
estimators, the pose detector, RIFE, upscalers), kept between tasks and freed by the owner of the resident
model when memory is short (before another model loads, after an out-of-memory error).

worker.py builds one ``ModelMemory`` and passes it to the engine (WanOrchestrator/Engine) and to the worker
loop, which hands it to handlers through the task context and reports what it holds (``tasks workers``).
"""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Memory is short when less than the next model's need plus this much is free on its device.
HEADROOM_BYTES = 2 * 2**30


def device_free_bytes() -> int | None:
    """Free accelerator memory, or None where there is none (CPU: auxiliary models are never in the way)."""
    torch = sys.modules.get("torch")  # nothing loaded yet means nothing to free
    if torch is None or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info()
    return int(free)


class ModelMemory:
    def __init__(self, free_bytes: Callable[[], int | None] = device_free_bytes) -> None:
        self._free_bytes = free_bytes
        self._auxiliary: dict[str, Any] = {}
        self._lock = threading.Lock()

    def auxiliary(self, name: str, build: Callable[[], T]) -> T:
        """The auxiliary model called ``name`` (e.g. ``depth:depth_anything_v2_small``), built on first use and
        kept until memory is short."""
        with self._lock:
            if name not in self._auxiliary:
                self._auxiliary[name] = build()
                log.info("auxiliary_model_loaded", model=name)
            return self._auxiliary[name]

    @property
    def auxiliary_names(self) -> list[str]:
        with self._lock:
            return sorted(self._auxiliary)

    def short_of(self, need_bytes: int | None) -> bool:
        free = self._free_bytes()
        return free is not None and free < (need_bytes or 0) + HEADROOM_BYTES

    def make_room(self, need_bytes: int | None, reason: str) -> list[str]:
        """Before a model of ``need_bytes`` loads: free the auxiliary models when memory is short."""
        if not self._auxiliary or not self.short_of(need_bytes):
            return []
        return self.release_auxiliary(reason)

    def release_auxiliary(self, reason: str) -> list[str]:
        with self._lock:
            released, self._auxiliary = sorted(self._auxiliary), {}
        if released:
            gc.collect()
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.info("auxiliary_models_released", models=released, reason=reason)
        return released
