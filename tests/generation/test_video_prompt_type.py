"""VACE ``video_prompt_type`` as WanGP users mean it, from a db row to the pixels: V the guide as is, P a pose
video extracted from it, D a depth video, M the mask, I the reference images; unknown letters and inputs
a letter needs but the row lacks are clear errors; ``control_net_weight2`` is refused (no second stream)."""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest

from source.db.models import NewTask, TaskStatus
from source.media.write import write_video
from tests.engine.test_generate_video import read_video
from tests.generation.test_generation_tasks import run_worker_in_process
from tests.helpers import generation_queue

PORTRAIT = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vpt")
    person = cv2.cvtColor(cv2.resize(cv2.imread(str(PORTRAIT)), (256, 320)), cv2.COLOR_BGR2RGB) / 255.0
    guide = write_video(np.stack([person] * 5), folder / "guide.mp4", 16)
    mask = np.zeros((5, 32, 32, 3))
    mask[:, 8:24, 8:24] = 1.0
    ref = folder / "ref.png"
    cv2.imwrite(str(ref), np.full((32, 32, 3), (0, 200, 40), np.uint8))
    return {"guide": str(guide), "mask": str(write_video(mask, folder / "mask.mp4", 16)), "ref": str(ref)}


def vace_row(media, letters: str | None, **extra):
    params = {"model": "tiny_vace", "prompt": "a person waves", "seed": 7, "video_guide": media["guide"], **extra}
    if letters is not None:
        params["video_prompt_type"] = letters
    return NewTask("vace", params)


def run_rows(store, tmp_path, rows):
    ids = [store.add_task(row) for row in rows]
    # keep_work_dirs (as --debug does): the test reads the control videos the model saw from the work folder
    run_worker_in_process(store, tmp_path / "out", generation_queue(tmp_path / "out"), keep_work_dirs=True)
    return [store.get_task(task_id) for task_id in ids]


def frames(row) -> np.ndarray:
    assert row.status is TaskStatus.COMPLETE, row.error_message
    return read_video(row.output_location).astype(int)


def test_letters_choose_how_the_guide_mask_and_references_are_used(sqlite_store, tmp_path, media):
    mask, refs = {"video_mask": media["mask"]}, {"image_refs": [media["ref"]]}
    rows = run_rows(sqlite_store, tmp_path, [
        vace_row(media, "V"),
        vace_row(media, "V", **mask, **refs),  # M and I absent: mask and references unused (and reported)
        vace_row(media, "VM", **mask),
        vace_row(media, "VI", **refs),
        vace_row(media, "P"),
        vace_row(media, "D", depth_model="tiny_depth_anything"),
        vace_row(media, None, **mask),  # no letters (older rows): every input given is used
    ])
    as_is, unused, masked, referenced, pose, depth, legacy = (frames(row) for row in rows)
    np.testing.assert_array_equal(as_is, unused)
    assert rows[1].result["ignored_params"] == ["image_refs", "video_mask"]
    np.testing.assert_array_equal(masked, legacy)
    for name, other in (("masked", masked), ("referenced", referenced), ("pose", pose), ("depth", depth)):
        assert np.abs(other - as_is).mean() > 0.5, name

    # P: the guide the model saw is the OpenPose drawing of the person (black background, coloured limbs)
    pose_guide = read_video(tmp_path / "out" / "_work" / rows[4].id / "control_pose.mp4")
    assert pose_guide.shape[0] == 5 and (pose_guide.max(axis=-1) < 30).mean() > 0.6 and pose_guide.max() > 150
    depth_guide = read_video(tmp_path / "out" / "_work" / rows[5].id / "control_depth.mp4")
    assert np.allclose(depth_guide[..., 0], depth_guide[..., 1], atol=8)  # greyscale depth
    assert np.abs(depth_guide.astype(int) - pose_guide.astype(int)).mean() > 5


@pytest.mark.parametrize(
    ("letters", "extra", "message"),
    [
        ("VX", {}, "unknown letter(s) X; known letters: V: use video_guide as is"),
        ("VM", {}, "has M but params.video_mask is missing"),
        ("VI", {}, "has I but params.image_refs is missing"),
        ("M", {"video_mask": "mask"}, "say how to use video_guide: V (as is), P (pose) or D (depth)"),
        ("PD", {}, "P (pose) or D (depth), not both"),
        ("V", {"control_net_weight2": 0.5}, "params.control_net_weight2: model 'tiny_vace' has no second control"),
    ],
)
def test_bad_letters_and_missing_inputs_fail_the_row_with_a_clear_error(sqlite_store, tmp_path, media, letters,
                                                                        extra, message):
    extra = {k: media.get(v, v) for k, v in extra.items()}
    [row] = run_rows(sqlite_store, tmp_path, [vace_row(media, letters, **extra)])
    assert row.status is TaskStatus.FAILED and message in row.error_message, row.error_message
