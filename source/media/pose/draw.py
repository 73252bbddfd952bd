"""OpenPose-style rendering: limbs as translucent ellipses, keypoints as dots, on black."""

from __future__ import annotations

import math

import cv2
import numpy as np

from source.media.pose.skeleton import COLOURS, LIMBS, Pose

LIMB_OPACITY = 0.6


def draw_poses(poses: list[Pose], width: int, height: int, *, limb_width: int = 4, dot_radius: int = 4) -> np.ndarray:
    """An RGB uint8 canvas with every pose drawn; limbs at 60 % of their colour, dots at full colour."""
    canvas = np.zeros((height, width, 3), np.uint8)
    for pose in poses:
        for index, (a, b) in enumerate(LIMBS):
            if not (pose.present(a) and pose.present(b)):
                continue
            (x0, y0), (x1, y1) = pose.points[a], pose.points[b]
            length = math.hypot(x1 - x0, y1 - y0)
            angle = math.degrees(math.atan2(y1 - y0, x1 - x0))
            centre = (round((x0 + x1) / 2), round((y0 + y1) / 2))
            polygon = cv2.ellipse2Poly(centre, (round(length / 2), limb_width), round(angle), 0, 360, 1)
            inside = np.zeros((height, width), np.uint8)
            cv2.fillConvexPoly(inside, polygon, 1)
            inside = inside.astype(bool)
            # Translucent over what is already drawn, as the reference renderer's 0.4/0.6 blend.
            blended = (1 - LIMB_OPACITY) * canvas[inside] + LIMB_OPACITY * np.array(COLOURS[index], float)
            canvas[inside] = np.round(blended).astype(np.uint8)
        for index in range(len(pose.points)):
            if pose.present(index):
                x, y = pose.points[index]
                cv2.circle(canvas, (round(x), round(y)), dot_radius, COLOURS[index], thickness=-1)
    return canvas
