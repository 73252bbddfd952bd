"""Frame interpolation: the flow method against a cross-fade, the IFNet code on random weights, the
RIFE loader offline, and ``rife_interpolate_images`` end to end through a real worker."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from source.db.models import NewTask, TaskStatus
from source.errors import ModelUnavailable
from source.media.interpolation.flow import FlowInterpolator, cross_fade
from source.media.interpolation.ifnet import IFNet, pad_to_multiple
from source.media.interpolation.rife import (
    RifeInterpolator,
    RifeWeights,
    build_ifnet,
    load_ifnet_state,
    load_rife,
)
from tests.engine.test_generate_video import read_video
from tests.utilities.conftest import run_worker_until_idle


def square_scene(x: int, *, textured: bool) -> np.ndarray:
    image = np.empty((96, 128, 3), np.uint8)
    image[:] = (40, 60, 80)
    if textured:
        rng = np.random.default_rng(0)
        image[30:60, x:x + 30] = cv2.GaussianBlur(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8), (5, 5), 0)
    else:
        image[30:60, x:x + 30] = (230, 180, 60)
    return image


@pytest.mark.parametrize("textured", [False, True])
@pytest.mark.parametrize("shift", [8, 20])
def test_flow_method_beats_a_cross_fade_against_the_true_middle_frame(textured, shift):
    first, last = square_scene(20, textured=textured), square_scene(20 + shift, textured=textured)
    middle = square_scene(20 + shift // 2, textured=textured).astype(float)
    flow_error = np.abs(FlowInterpolator(first, last).frame(0.5) - middle).mean()
    fade_error = np.abs(cross_fade(first, last, 0.5) - middle).mean()
    assert flow_error < 0.25 * fade_error, (flow_error, fade_error)


def test_flow_method_returns_the_inputs_at_both_ends():
    first, last = square_scene(20, textured=True), square_scene(30, textured=True)
    interpolator = FlowInterpolator(first, last)
    assert np.array_equal(interpolator.frame(0.0), first)
    assert np.array_equal(interpolator.frame(1.0), last)


def test_ifnet_with_random_weights_gives_a_frame_of_the_input_size():
    torch.manual_seed(0)
    net = IFNet().eval()
    first, last = torch.rand(2, 3, 40, 72), torch.rand(2, 3, 40, 72)
    with torch.inference_mode():
        out = net(pad_to_multiple(first), pad_to_multiple(last), torch.tensor([0.25, 0.75]))
    assert out.shape == (2, 3, 64, 128)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1  # a blend of warped inputs


def test_a_saved_checkpoint_round_trips_through_the_loader(tmp_path):
    torch.manual_seed(1)
    net = IFNet()
    path = tmp_path / "flownet.pkl"
    torch.save({f"module.{key}": value for key, value in net.state_dict().items()}, path)
    loaded = build_ifnet(load_ifnet_state(path), str(path))
    first = np.random.default_rng(2).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    last = np.random.default_rng(3).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    interpolator = RifeInterpolator(loaded, first, last)
    assert interpolator.frame(0.5).shape == (40, 60, 3) and interpolator.frame(0.5).dtype == np.uint8
    assert np.array_equal(interpolator.frame(0.0), first) and np.array_equal(interpolator.frame(1.0), last)


def test_a_checkpoint_of_another_layout_is_refused_clearly(tmp_path):
    path = tmp_path / "other.pkl"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, path)
    with pytest.raises(ModelUnavailable, match="does not match the IFNet 4.2x layout: Error"):
        build_ifnet(load_ifnet_state(path), str(path))


def test_the_rife_loader_offline_names_the_repo_and_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable) as caught:
        load_rife(RifeWeights(repo="example/rife-weights", filename="flownet.pkl"))
    message = str(caught.value)
    assert "RIFE (IFNet) weights (hub repo 'example/rife-weights', file 'flownet.pkl')" in message
    assert "the hub is offline" in message and "hf download example/rife-weights flownet.pkl" in message
    with pytest.raises(ModelUnavailable, match="RIFE_WEIGHTS_PATH /nowhere/flownet.pkl is not a file"):
        load_rife(RifeWeights(repo="example/rife-weights", filename="flownet.pkl", path="/nowhere/flownet.pkl"))


def test_rife_interpolate_images_falls_back_to_flow_offline_and_says_so(sqlite_store, tmp_path, media,
                                                                       monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RIFE_WEIGHTS_REPO", "example/not-cached")
    out = tmp_path / "out"
    auto = sqlite_store.add_task(NewTask("rife_interpolate_images", {
        "input_image_path1": str(media["image_a"]), "input_image_path2": str(media["image_b"]),
        "frames": 7, "resolution": "64x48"}))
    named = sqlite_store.add_task(NewTask("rife_interpolate_images", {
        "input_image_path1": str(media["image_a"]), "input_image_path2": str(media["image_b"]),
        "frames": 3, "resolution": [32, 24], "method": "flow", "output_path": "clips/bridge.mp4"}))
    forced = sqlite_store.add_task(NewTask("rife_interpolate_images", {
        "input_image_path1": str(media["image_a"]), "input_image_path2": str(media["image_b"]),
        "frames": 3, "resolution": "32x24", "method": "rife"}))
    run_worker_until_idle(sqlite_store, out)

    row = sqlite_store.get_task(auto)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.output_location == str(out.resolve() / f"{auto}_interpolated.mp4")
    assert row.result["method"] == "flow" and "example/not-cached" in row.result["rife_unavailable"]
    assert {"load_inputs", "prepare", "interpolate_and_encode", "total"} <= set(row.result["timings"])
    video = read_video(row.output_location)
    assert video.shape == (7, 48, 64, 3)
    means = video.reshape(7, -1).mean(axis=1)
    assert abs(means[0] - 30) < 4 and abs(means[-1] - 220) < 4  # the two (resized) inputs
    assert np.all(np.diff(means) > 0)  # and a steady path between them

    named_row = sqlite_store.get_task(named)
    assert named_row.status is TaskStatus.COMPLETE, named_row.error_message
    assert named_row.output_location == str(out.resolve() / "clips" / "bridge.mp4")
    assert read_video(named_row.output_location).shape == (3, 24, 32, 3)

    forced_row = sqlite_store.get_task(forced)
    assert forced_row.status is TaskStatus.FAILED
    assert "RIFE (IFNet) weights (hub repo 'example/not-cached', file 'flownet.pkl')" in forced_row.error_message


def test_rife_interpolate_images_runs_ifnet_when_its_weights_are_there(sqlite_store, tmp_path, media, monkeypatch):
    torch.manual_seed(5)
    checkpoint = tmp_path / "flownet.pkl"
    torch.save(IFNet().state_dict(), checkpoint)
    monkeypatch.setenv("RIFE_WEIGHTS_PATH", str(checkpoint))
    task = sqlite_store.add_task(NewTask("rife_interpolate_images", {
        "input_image_path1": str(media["image_a"]), "input_image_path2": str(media["image_b"]),
        "frames": 4, "resolution": "64x48"}))
    run_worker_until_idle(sqlite_store, tmp_path / "out")

    row = sqlite_store.get_task(task)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    assert row.result["method"] == "rife" and row.result["rife_weights"] == str(checkpoint)
    assert "rife_unavailable" not in row.result
    video = read_video(row.output_location)
    assert video.shape == (4, 48, 64, 3)
    assert abs(video[0].mean() - 30) < 4 and abs(video[-1].mean() - 220) < 4
