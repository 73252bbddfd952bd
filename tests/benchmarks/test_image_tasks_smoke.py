"""benchmarks/image_tasks.py on two task types, one run each, so the harness keeps working between real runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT


@pytest.mark.slow
def test_image_tasks_benchmark_prints_a_ratio_per_task_type():
    done = subprocess.run([sys.executable, "benchmarks/image_tasks.py", "--runs", "1", "--only",
                           "image-upscale,z_image_turbo"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.strip()}
    for task_type in ("image-upscale", "z_image_turbo"):
        bare, ours, ratio = (float(v) for v in lines[task_type][1:4])
        assert bare > 0 and ours > 0
        # the seconds are printed to 3 decimals, the ratio from the unrounded medians
        half = 5e-4
        assert (ours - half) / (bare + half) - 0.01 <= ratio <= (ours + half) / max(bare - half, 1e-9) + 0.01
