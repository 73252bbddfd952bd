"""Which accelerator this box has, read without importing torch (nvidia-smi when present)."""

from __future__ import annotations

import shutil
import subprocess


def detect_gpu() -> tuple[str | None, float | None]:
    """(name, memory in GiB) of the first NVIDIA GPU, or (None, None)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None, None
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        name, memory_mib = out.splitlines()[0].rsplit(",", 1)
        return name.strip(), round(float(memory_mib) / 1024, 1)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None, None
