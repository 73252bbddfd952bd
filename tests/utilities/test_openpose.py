"""``generate_openpose``: the BlazePose → OpenPose mapping, pixel-checked drawing, real offline detection."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest

from source.db.models import NewTask, TaskStatus
from source.errors import ModelUnavailable
from source.media.pose.detect import MediapipePoseDetector
from source.media.pose.draw import LIMB_OPACITY, draw_poses
from source.media.pose.skeleton import COLOURS, KEYPOINTS, LIMBS, Pose, from_blazepose
from tests.utilities.conftest import run_worker_until_idle

# A photograph that ships inside a registry package (matplotlib's sample data): a real person, offline.
PORTRAIT = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def test_blazepose_landmarks_map_to_openpose_keypoints_with_the_neck_between_the_shoulders():
    landmarks = np.zeros((33, 3))
    landmarks[:, 2] = 1.0
    landmarks[0, :2] = (0.5, 0.2)  # nose
    landmarks[11, :2] = (0.7, 0.4)  # left shoulder
    landmarks[12, :2] = (0.3, 0.4)  # right shoulder
    landmarks[16, :2] = (0.2, 0.8)  # right wrist
    landmarks[27] = (0.6, 0.9, 0.1)  # left ankle, barely visible
    landmarks[28, :2] = (0.4, 1.3)  # right ankle, off the image
    pose = from_blazepose(landmarks, width=101, height=201)
    named = pose.as_dict()
    assert named["nose"] == [50.0, 40.0]
    assert named["neck"] == [50.0, 80.0]
    assert named["right_shoulder"] == [30.0, 80.0] and named["left_shoulder"] == [70.0, 80.0]
    assert named["right_wrist"] == [20.0, 160.0]
    assert named["left_ankle"] is None and named["right_ankle"] is None
    assert len(named) == len(KEYPOINTS) == 18


def _pose(**named: tuple[float, float]) -> Pose:
    points = np.full((18, 2), np.nan)
    for name, xy in named.items():
        points[KEYPOINTS.index(name)] = xy
    return Pose(points)


def test_drawing_puts_standard_colours_at_keypoints_and_translucent_limbs_between_them():
    pose = _pose(neck=(50, 20), right_shoulder=(20, 20), left_shoulder=(80, 20), right_elbow=(20, 70))
    canvas = draw_poses([pose], 100, 100)
    neck, rsh, lsh, relb = 1, 2, 5, 3
    for index, (x, y) in ((neck, (50, 20)), (rsh, (20, 20)), (lsh, (80, 20)), (relb, (20, 70))):
        assert tuple(canvas[y, x]) == COLOURS[index]
    limb_colour = {limb: COLOURS[i] for i, limb in enumerate(LIMBS)}
    expected = np.round(np.array(limb_colour[(neck, rsh)]) * LIMB_OPACITY)
    assert tuple(canvas[20, 35]) == tuple(expected)  # middle of neck → right shoulder
    expected = np.round(np.array(limb_colour[(rsh, relb)]) * LIMB_OPACITY)
    assert tuple(canvas[45, 20]) == tuple(expected)  # middle of right shoulder → elbow
    assert not canvas[60, 80].any() and not canvas[95, 5].any()  # no limb to a missing wrist, black elsewhere
    assert not canvas[45, 80].any()  # left elbow missing: nothing below the left shoulder


def test_missing_pose_models_are_a_clear_error(tmp_path):
    with pytest.raises(ModelUnavailable, match=r"pose model unavailable: modules/pose_detection/pose_detection\.tflite, "
                                               r"modules/pose_landmark/pose_landmark_full\.tflite missing under"):
        MediapipePoseDetector(package_root=tmp_path)


def test_generate_openpose_detects_a_real_person_and_fails_clearly_on_none(sqlite_store, tmp_path):
    portrait = tmp_path / "portrait.jpg"
    shutil.copy(PORTRAIT, portrait)
    empty = tmp_path / "wall.png"
    cv2.imwrite(str(empty), np.full((240, 320, 3), (120, 130, 140), np.uint8))
    out = tmp_path / "out"
    found = sqlite_store.add_task(NewTask("generate_openpose", {"input_image_path": str(portrait)}))
    nobody = sqlite_store.add_task(NewTask("generate_openpose", {"input_image_path": str(empty)}))
    run_worker_until_idle(sqlite_store, out)

    row = sqlite_store.get_task(found)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.output_location == str(out.resolve() / f"{found}_openpose.png")
    assert row.result["detector"].startswith("mediapipe-0.10.14") and row.result["people"] == 1
    points = row.result["keypoints"][0]
    nose, left, right = points["nose"], points["left_shoulder"], points["right_shoulder"]
    assert 220 < nose[0] < 320 and 180 < nose[1] < 270  # the face is centred, upper half of 512×600
    assert right[0] < nose[0] < left[0] and right[1] > nose[1] and left[1] > nose[1]
    drawing = cv2.cvtColor(cv2.imread(row.output_location), cv2.COLOR_BGR2RGB)
    assert drawing.shape == (600, 512, 3)
    assert tuple(drawing[round(nose[1]), round(nose[0])]) == COLOURS[0]
    assert (drawing.sum(axis=2) == 0).mean() > 0.9  # a skeleton on black, not the photo
    assert {"load_input", "load_model", "detect", "draw", "total"} <= set(row.result["timings"])

    failed = sqlite_store.get_task(nobody)
    assert failed.status is TaskStatus.FAILED
    assert failed.error_message == "no person detected in wall.png"
