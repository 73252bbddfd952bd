"""The two interpolation methods of ``rife_interpolate_images``, measured in one run on one machine.

Quality: mean absolute error (0..255) of the middle frame against the true middle frame of a synthetic
moving textured square, for the flow method and a plain cross-fade, and their ratio (lower is better).
Speed: median seconds per interpolated frame at 832x480 for the flow method and for IFNet (random
weights: the same arithmetic as trained ones), and their ratio.

    python benchmarks/interpolation_methods.py [--runs 5]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import click
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from source.media.interpolation.flow import FlowInterpolator, cross_fade  # noqa: E402


def scene(x: int, width: int = 832, height: int = 480, size: int = 120) -> np.ndarray:
    image = np.empty((height, width, 3), np.uint8)
    image[:] = (40, 60, 80)
    texture = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    image[180:180 + size, x:x + size] = cv2.GaussianBlur(texture, (7, 7), 0)
    return image


def timed(make_frame, runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        make_frame()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


@click.command()
@click.option("--runs", default=5, show_default=True)
def main(runs: int) -> None:
    import torch

    from source.media.interpolation.ifnet import IFNet
    from source.media.interpolation.rife import RifeInterpolator

    print("quality (mean abs error of the middle frame, 832x480):")
    for shift in (8, 24, 48, 96):
        first, last, middle = scene(200), scene(200 + shift), scene(200 + shift // 2).astype(float)
        flow = np.abs(FlowInterpolator(first, last).frame(0.5) - middle).mean()
        fade = np.abs(cross_fade(first, last, 0.5) - middle).mean()
        print(f"  shift {shift:3d}px: flow {flow:6.3f}  cross-fade {fade:6.3f}  flow/cross-fade {flow / fade:5.3f}")

    first, last = scene(200), scene(240)
    torch.manual_seed(0)
    rife = RifeInterpolator(IFNet().eval(), first, last)
    rife.frame(0.5)  # warm-up
    flow_prepare = timed(lambda: FlowInterpolator(first, last), runs)
    flow_interpolator = FlowInterpolator(first, last)
    flow_frame = timed(lambda: flow_interpolator.frame(0.5), runs)
    rife_frame = timed(lambda: rife.frame(0.5), runs)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"speed at 832x480 ({runs} runs, median; IFNet on {device}, torch threads {torch.get_num_threads()}):")
    print(f"  flow: {flow_prepare:.3f} s once per pair (two DIS flows) + {flow_frame:.3f} s per frame")
    print(f"  IFNet: {rife_frame:.3f} s per frame; IFNet/flow per frame {rife_frame / flow_frame:.1f}x")


if __name__ == "__main__":
    main()
