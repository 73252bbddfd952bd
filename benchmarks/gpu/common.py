"""What the GPU benchmarks share: device, page cache, weight sizes, peak memory, timing and their CLI options."""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import TypeVar

import click
import torch

T = TypeVar("T")
DEFAULT_ROOT = Path("/tmp/wan-random")
NO_CUDA = "n/a (no CUDA)"

root_option = click.option(
    "--root", type=click.Path(path_type=Path), default=DEFAULT_ROOT, show_default=True,
    help="Folder of the random-weight pipelines (built on first use, then reused).",
)


def device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def describe_device() -> str:
    return f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "cpu (no CUDA)"


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def free_memory() -> None:
    """Return memory of objects already dropped (call after the last reference is gone)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def timed(run: Callable[[], T]) -> tuple[T, float]:
    """``run()`` and its wall time, queued GPU work included."""
    started = time.perf_counter()
    result = run()
    synchronize()
    return result, time.perf_counter() - started


def median_step_seconds(step_ends: list[float]) -> float:
    """Median gap between consecutive denoising-step ends (seconds after the call started); the first step,
    which also encodes the prompt, is left out when there are others."""
    gaps = [later - earlier for earlier, later in pairwise(step_ends)]
    return statistics.median(gaps) if gaps else step_ends[0]


def drop_page_cache() -> bool:
    """Drop the OS page cache (root on Linux only); False when this process may not."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def page_cache(folder: Path, want_cold: bool) -> str:
    """Put ``folder``'s files in a known cache state and name it: "cold" (dropped) or "warm" (read once)."""
    if want_cold and drop_page_cache():
        return "cold"
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as f:
                while f.read(1 << 24):
                    pass
    return "warm"


def weight_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*.safetensors"))


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> tuple[float, float] | None:
    """Peak (allocated, reserved) GiB since the last reset; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


@contextmanager
def definitions_dir() -> Iterator[Path]:
    """A fresh folder the engine reads model definitions from (``WGP_DEFAULTS_DIR``) while inside."""
    previous = os.environ.get("WGP_DEFAULTS_DIR")
    with tempfile.TemporaryDirectory(prefix="wgp-defaults-") as tmp:
        os.environ["WGP_DEFAULTS_DIR"] = tmp
        try:
            yield Path(tmp)
        finally:
            if previous is None:
                os.environ.pop("WGP_DEFAULTS_DIR", None)
            else:
                os.environ["WGP_DEFAULTS_DIR"] = previous
