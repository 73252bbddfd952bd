"""``generate_depth``: a tiny random-weight Depth Anything end to end on CPU, and clear errors for
missing weights and unknown models."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from source.db.models import NewTask, TaskStatus
from source.errors import InvalidParams
from source.media.depth import load_depth_model, to_grey_png_array
from tests.utilities.conftest import run_worker_until_idle


def test_depth_is_stretched_to_the_full_grey_range_and_a_flat_map_is_black():
    grey = to_grey_png_array(np.array([[2.0, 3.0], [4.0, 6.0]], np.float32))
    assert grey.tolist() == [[0, 64], [128, 255]]
    assert not to_grey_png_array(np.full((3, 3), 7.0)).any()


def test_the_tiny_model_estimates_depth_at_the_input_size():
    estimator = load_depth_model("tiny_depth_anything")
    depth = estimator.estimate(np.random.default_rng(0).integers(0, 255, (45, 70, 3), dtype=np.uint8))
    assert depth.shape == (45, 70) and depth.dtype == np.float32 and np.isfinite(depth).all()


def test_unknown_depth_models_are_refused_by_name():
    with pytest.raises(InvalidParams, match="unknown depth model 'midas_v9'; known: depth_anything_v2_base"):
        load_depth_model("midas_v9")


def test_generate_depth_end_to_end_from_a_path_and_from_another_tasks_output(sqlite_store, tmp_path, media,
                                                                           monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rng = np.random.default_rng(4)
    picture = tmp_path / "scene.png"
    cv2.imwrite(str(picture), rng.integers(0, 255, (50, 80, 3), dtype=np.uint8))
    out = tmp_path / "out"
    direct = sqlite_store.add_task(NewTask("generate_depth", {"input_image_path": str(picture),
                                                              "model": "tiny_depth_anything"}))
    frame = sqlite_store.add_task(NewTask("extract_frame", {"input_video_path": str(media["video"])}))
    chained = sqlite_store.add_task(NewTask("generate_depth", {"input_image_task_id": frame,
                                                               "model": "tiny_depth_anything", "output_dir": "depth"},
                                            dependant_on=frame))
    real = sqlite_store.add_task(NewTask("generate_depth", {"input_image_path": str(picture)}))
    run_worker_until_idle(sqlite_store, out)

    row = sqlite_store.get_task(direct)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.output_location == str(out.resolve() / f"{direct}_depth.png")
    depth = cv2.imread(row.output_location)
    assert depth.shape == (50, 80, 3)
    assert (depth[..., 0] == depth[..., 1]).all() and (depth[..., 1] == depth[..., 2]).all()  # grey
    assert depth.min() == 0 and depth.max() == 255
    assert row.result["model"] == "tiny_depth_anything" and row.result["weights"] == "tiny:depth_anything"
    assert {"load_input", "load_model", "estimate", "write", "total"} <= set(row.result["timings"])

    chained_row = sqlite_store.get_task(chained)
    assert chained_row.status is TaskStatus.COMPLETE, chained_row.error_message
    assert chained_row.output_location == str(out.resolve() / "depth" / f"{chained}_depth.png")
    assert cv2.imread(chained_row.output_location).shape == (32, 48, 3)

    failed = sqlite_store.get_task(real)
    assert failed.status is TaskStatus.FAILED
    assert failed.error_message.startswith(
        "depth model 'depth_anything_v2_small' weights (hub repo 'depth-anything/Depth-Anything-V2-Small-hf') "
        "are not in the local Hugging Face cache and the hub is offline (HF_HUB_OFFLINE=1).")
