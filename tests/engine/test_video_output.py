"""The mp4 writer is reproducible: the same frames give the same file, whatever ran in the process before."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from source.media.write import write_video


def test_the_same_frames_give_the_same_mp4_bytes_right_after_bfloat16_work(tmp_path):
    # A worker encodes right after a denoising loop. On an AVX-512 machine, bfloat16 attention before each
    # encode made x264's CPU-specific assembly produce a different file for the same frames (a few
    # macroblocks, up to 14/255 once decoded) in most of 16 tries; two rows with the same seed then differed.
    rng = np.random.default_rng(7)
    x = np.mgrid[0:32, 0:32][1] / 31.0
    frames = np.stack([
        np.stack([np.sin(3 * x + 0.4 * t + c) * 0.5 + 0.5 for c in range(3)], -1) * 0.7 + 0.3 * rng.random((32, 32, 3))
        for t in range(5)
    ]).astype(np.float32)
    digests = set()
    for i in range(12):
        with torch.inference_mode():
            for _ in range(20):
                torch.nn.functional.scaled_dot_product_attention(
                    *(torch.randn(1, 2, 256, 32, dtype=torch.bfloat16) for _ in range(3)))
        digests.add(hashlib.sha256(write_video(frames, tmp_path / f"{i}.mp4", 16).read_bytes()).hexdigest())
    assert len(digests) == 1
