"""Monocular depth estimation through transformers (Depth Anything V2 by default): an image in, a
relative depth map (near = bright) out."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from source.errors import InvalidParams, ModelUnavailable
from source.hub import fetch_hub_snapshot
from source.model_memory import ModelMemory

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DepthModelSpec:
    """Where a depth model's weights come from: a hub repo, or a tiny random-weight build for tests."""

    repo: str | None = None
    tiny: str | None = None

    def describe(self) -> str:
        return self.repo or f"tiny:{self.tiny}"


DEPTH_MODELS: dict[str, DepthModelSpec] = {
    "depth_anything_v2_small": DepthModelSpec(repo="depth-anything/Depth-Anything-V2-Small-hf"),
    "depth_anything_v2_base": DepthModelSpec(repo="depth-anything/Depth-Anything-V2-Base-hf"),
    "dpt_hybrid_midas": DepthModelSpec(repo="Intel/dpt-hybrid-midas"),
    "tiny_depth_anything": DepthModelSpec(tiny="depth_anything"),
}
DEFAULT_DEPTH_MODEL = "depth_anything_v2_small"


def model_spec(name: str) -> DepthModelSpec:
    try:
        return DEPTH_MODELS[name]
    except KeyError:
        raise InvalidParams(f"params.model: unknown depth model {name!r}; known: {', '.join(sorted(DEPTH_MODELS))}") from None


def _weights_folder(name: str, spec: DepthModelSpec) -> Path:
    if spec.tiny:
        from source.engine import tiny

        return tiny.materialise(spec.tiny)
    return fetch_hub_snapshot(spec.repo, what=f"depth model {name!r}",
                              allow_patterns=["*.json", "*.safetensors", "*.txt"])


class DepthEstimator:
    def __init__(self, name: str, folder: Path) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.name = name
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.processor = AutoImageProcessor.from_pretrained(folder)
            self.model = AutoModelForDepthEstimation.from_pretrained(folder).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"depth model {name!r} at {folder} could not be loaded: {exc}") from exc
        self._lock = threading.Lock()

    def estimate(self, image_rgb: np.ndarray) -> np.ndarray:
        """Relative depth as float32 (H, W) at the input's size; larger means nearer."""
        import torch
        from PIL import Image

        height, width = image_rgb.shape[:2]
        inputs = self.processor(images=Image.fromarray(image_rgb), return_tensors="pt").to(self.device)
        with self._lock, torch.inference_mode():
            outputs = self.model(**inputs)
        depth = self.processor.post_process_depth_estimation(outputs, target_sizes=[(height, width)])
        return depth[0]["predicted_depth"].float().cpu().numpy()


def to_grey_png_array(depth: np.ndarray) -> np.ndarray:
    """Depth stretched to 0..255 (uint8); a constant map is all black rather than a division by zero."""
    low, high = float(np.min(depth)), float(np.max(depth))
    if not np.isfinite([low, high]).all() or high - low < 1e-12:
        return np.zeros(depth.shape, np.uint8)
    return np.round((depth - low) / (high - low) * 255.0).astype(np.uint8)


def load_depth_model(name: str, memory: ModelMemory | None = None) -> DepthEstimator:
    """The estimator for a name of DEPTH_MODELS, kept by ``memory`` (the worker's, beside its resident model)
    until memory is short; built afresh for a caller with none."""
    spec = model_spec(name)

    def build() -> DepthEstimator:
        estimator = DepthEstimator(name, _weights_folder(name, spec))
        log.info("depth_model_loaded", model=name, source=spec.describe())
        return estimator

    return build() if memory is None else memory.auxiliary(f"depth:{name}", build)
