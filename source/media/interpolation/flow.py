"""Interpolation with no weights: DIS optical flow both ways, both images warped to time t, blended.

The flows from time t back to each image come from the two endpoint flows under a linear-motion
assumption (the Super SloMo approximation); each warped image is trusted less where its flow disagrees
with the opposite flow (occlusions, where warping smears), and more the closer t is to it.
"""

from __future__ import annotations

import cv2
import numpy as np


class FlowInterpolator:
    """Computes the two flows once per image pair; ``frame(t)`` is then two remaps and a blend."""

    name = "flow"

    def __init__(self, image0: np.ndarray, image1: np.ndarray) -> None:
        if image0.shape != image1.shape:
            raise ValueError(f"images differ in shape: {image0.shape} vs {image1.shape}")
        self.image0 = image0.astype(np.float32)
        self.image1 = image1.astype(np.float32)
        grey0 = cv2.cvtColor(image0, cv2.COLOR_RGB2GRAY)
        grey1 = cv2.cvtColor(image1, cv2.COLOR_RGB2GRAY)
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self.flow01 = dis.calc(grey0, grey1, None)
        self.flow10 = dis.calc(grey1, grey0, None)
        height, width = grey0.shape
        xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        self.grid = np.stack([xs, ys], axis=-1)

    def _warp(self, image: np.ndarray, flow: np.ndarray) -> np.ndarray:
        coords = self.grid + flow
        return cv2.remap(image, coords[..., 0], coords[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def frame(self, t: float) -> np.ndarray:
        """The RGB uint8 frame at time ``t`` in [0, 1]; exactly the inputs at 0 and 1."""
        if t <= 0.0:
            return self.image0.astype(np.uint8)
        if t >= 1.0:
            return self.image1.astype(np.uint8)
        flow_t0 = -(1.0 - t) * t * self.flow01 + t * t * self.flow10
        flow_t1 = (1.0 - t) ** 2 * self.flow01 - t * (1.0 - t) * self.flow10
        warped0 = self._warp(self.image0, flow_t0)
        warped1 = self._warp(self.image1, flow_t1)
        # Forward-backward consistency of each endpoint flow, sampled where frame t looks it up.
        error0 = np.linalg.norm(self.flow01 + self._warp(self.flow10, self.flow01), axis=-1)
        error1 = np.linalg.norm(self.flow10 + self._warp(self.flow01, self.flow10), axis=-1)
        trust0 = (1.0 - t) / (1.0 + self._warp(error0, flow_t0))
        trust1 = t / (1.0 + self._warp(error1, flow_t1))
        weight0 = (trust0 / np.maximum(trust0 + trust1, 1e-6))[..., None]
        blended = weight0 * warped0 + (1.0 - weight0) * warped1
        return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def cross_fade(image0: np.ndarray, image1: np.ndarray, t: float) -> np.ndarray:
    """The baseline the flow method must beat: a plain per-pixel blend."""
    mixed = (1.0 - t) * image0.astype(np.float32) + t * image1.astype(np.float32)
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
