"""Inputs for orchestrated workflows: small distinct keyframe images and travel params builders."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from source.worker.settings import WorkerSettings
from tests.helpers import in_process_worker

SIZE = 32


@pytest.fixture
def keyframes(tmp_path: Path) -> list[str]:
    """Three images that differ strongly (red, green, blue casts over noise)."""
    rng = np.random.default_rng(5)
    paths = []
    for i in range(3):
        image = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
        image[..., i] += 180
        path = tmp_path / f"key_{i}.png"
        cv2.imwrite(str(path), image[..., ::-1])
        paths.append(str(path))
    return paths


def travel_params(images: list[str], **overrides: Any) -> dict[str, Any]:
    segments = len(images) - 1
    details = {
        "input_image_paths_resolved": images,
        "base_prompts_expanded": [f"a journey, part {i}" for i in range(segments)],
        "negative_prompts_expanded": ["blurry"] * segments,
        "segment_frames_expanded": [9] * segments,
        "frame_overlap_expanded": [4] * segments,
        "parsed_resolution_wh": f"{SIZE}x{SIZE}",
        "model_name": "tiny_vace",
        "seed_base": 11,
        "fps_helpers": 16,
        "num_new_segments_to_generate": segments,
        "run_id": "run-1",
        "steps": 2,
        "crossfade_sharp_amt": 0.0,
    }
    details.update(overrides)
    return {"orchestrator_details": details}


def run_in_process(store, out: Path, *, max_tasks: int | None = None, **settings: Any) -> None:
    """Keyframes live in pytest's temp folders: the worker allows them unless ``settings`` say otherwise."""
    settings = {"input_roots": (Path(tempfile.gettempdir()),), **settings}
    worker = in_process_worker(store, WorkerSettings(worker_id="in-proc", main_output_dir=out, lease_seconds=5,
                                                     **settings), exit_when_idle=True, max_tasks=max_tasks)
    assert worker.run() == 0
