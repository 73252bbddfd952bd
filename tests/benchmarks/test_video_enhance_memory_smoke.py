"""benchmarks/video_enhance_memory.py at a few frames, so the harness keeps working between real runs."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from benchmarks.video_enhance_memory import main

pytestmark = pytest.mark.slow


def test_video_enhance_memory_prints_both_runs_and_their_ratio():
    result = CliRunner().invoke(main, ["--short", "4", "--long", "8", "--size", "16"], catch_exceptions=False)
    assert result.exit_code == 0, result.output[-3000:]
    assert "     4 frames ->      7 frames: peak RSS" in result.output
    assert "     8 frames ->     15 frames: peak RSS" in result.output
    assert "peak RSS ratio, 8 / 4 frames:" in result.output
