"""The OpenPose (COCO-18) skeleton: keypoint order, limbs, colours, and the mapping from mediapipe's 33
BlazePose landmarks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEYPOINTS = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)

# Pairs of keypoint indices, in the order OpenPose renderers draw them (the colour goes with the position).
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)

# RGB, one per keypoint; limb i uses colour i. The hue wheel every OpenPose-conditioned model was trained on.
COLOURS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)

# OpenPose keypoint → BlazePose landmark index; the neck (1) is the shoulders' midpoint.
_FROM_BLAZEPOSE = {0: 0, 2: 12, 3: 14, 4: 16, 5: 11, 6: 13, 7: 15, 8: 24, 9: 26, 10: 28,
                   11: 23, 12: 25, 13: 27, 14: 5, 15: 2, 16: 8, 17: 7}
_LEFT_SHOULDER, _RIGHT_SHOULDER = 11, 12
BLAZEPOSE_LANDMARKS = 33


@dataclass(frozen=True)
class Pose:
    """One person: (18, 2) pixel coordinates, NaN where a keypoint was not found."""

    points: np.ndarray

    def __post_init__(self) -> None:
        if self.points.shape != (len(KEYPOINTS), 2):
            raise ValueError(f"a pose has {len(KEYPOINTS)} (x, y) points, got shape {self.points.shape}")

    def present(self, index: int) -> bool:
        return bool(np.isfinite(self.points[index]).all())

    def as_dict(self) -> dict[str, list[float] | None]:
        return {name: ([round(float(v), 1) for v in self.points[i]] if self.present(i) else None)
                for i, name in enumerate(KEYPOINTS)}


def from_blazepose(landmarks: np.ndarray, width: int, height: int, min_visibility: float = 0.5) -> Pose:
    """(33, 3) normalised (x, y, visibility) landmarks → a Pose in pixels; unsure or off-image points dropped."""
    if landmarks.shape != (BLAZEPOSE_LANDMARKS, 3):
        raise ValueError(f"expected (33, 3) landmarks, got {landmarks.shape}")
    seen = (landmarks[:, 2] >= min_visibility) & np.all((landmarks[:, :2] >= 0) & (landmarks[:, :2] <= 1), axis=1)
    pixels = landmarks[:, :2] * np.array([width - 1, height - 1], dtype=float)
    points = np.full((len(KEYPOINTS), 2), np.nan)
    for keypoint, landmark in _FROM_BLAZEPOSE.items():
        if seen[landmark]:
            points[keypoint] = pixels[landmark]
    if seen[_LEFT_SHOULDER] and seen[_RIGHT_SHOULDER]:
        points[1] = (pixels[_LEFT_SHOULDER] + pixels[_RIGHT_SHOULDER]) / 2
    return Pose(points)
