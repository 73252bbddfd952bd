"""Pose detection behind one interface; the mediapipe detector runs the BlazePose models its 0.10.x
wheels carry, so it works offline."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np

from source.errors import ModelUnavailable
from source.media.pose.skeleton import Pose, from_blazepose
from source.model_memory import ModelMemory

# What mediapipe's solutions.pose graph loads (model_complexity=1), relative to the package folder.
MEDIAPIPE_POSE_MODELS = ("modules/pose_detection/pose_detection.tflite",
                         "modules/pose_landmark/pose_landmark_full.tflite")


class PoseDetector(Protocol):
    name: str

    def detect(self, image_rgb: np.ndarray) -> list[Pose]:
        """Every person found in an RGB uint8 image (empty when none)."""


def _mediapipe_root() -> Path:
    try:
        import mediapipe
    except ImportError as exc:
        raise ModelUnavailable(
            "pose model unavailable: mediapipe is not installed (pip install 'mediapipe==0.10.14'; later "
            f"0.10.x/1.x wheels carry no pose model) ({exc})") from exc
    return Path(mediapipe.__file__).parent


def check_pose_models(root: Path) -> None:
    missing = [name for name in MEDIAPIPE_POSE_MODELS if not (root / name).is_file()]
    if missing:
        raise ModelUnavailable(
            f"pose model unavailable: {', '.join(missing)} missing under {root} (mediapipe 0.10.14 wheels carry "
            "them; mediapipe 0.10.35+ and 1.x do not)")


class MediapipePoseDetector:
    """One person per image (BlazePose); the graph is built once and used under a lock (not thread-safe)."""

    def __init__(self, package_root: Path | None = None, min_visibility: float = 0.5) -> None:
        root = package_root or _mediapipe_root()
        check_pose_models(root)
        import mediapipe

        self.name = f"mediapipe-{mediapipe.__version__}-blazepose-full"
        self.min_visibility = min_visibility
        self._pose = mediapipe.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                                   min_detection_confidence=0.5)
        self._lock = threading.Lock()

    def detect(self, image_rgb: np.ndarray) -> list[Pose]:
        with self._lock, warnings.catch_warnings():
            # mediapipe 0.10.14 calls a protobuf API that protobuf 4.x deprecates, once per image.
            warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype", category=UserWarning)
            found = self._pose.process(np.ascontiguousarray(image_rgb)).pose_landmarks
        if found is None:
            return []
        landmarks = np.array([(p.x, p.y, p.visibility) for p in found.landmark], dtype=float)
        height, width = image_rgb.shape[:2]
        return [from_blazepose(landmarks, width, height, self.min_visibility)]


def default_detector(memory: ModelMemory | None = None) -> PoseDetector:
    """The pose detector, kept by ``memory`` (the worker's) until memory is short; a fresh one for a caller
    with none."""
    return MediapipePoseDetector() if memory is None else memory.auxiliary("pose:mediapipe", MediapipePoseDetector)
