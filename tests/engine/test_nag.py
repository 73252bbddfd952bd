"""Normalized attention guidance in Wan's cross-attention, on real tiny pipelines: it changes the output,
gives the same output batched or not, is the plain attention when nothing of it is blended in, and leaves
nothing on the pipeline after the call. Overlap noise on VACE windows keeps batched guidance too."""

from __future__ import annotations

import numpy as np
import pytest

from source.engine import guidance_batching
from source.engine.model_defs import EngineOptions
from source.engine.nag import HOOK_NAME, NagAttnProcessor, cross_attentions, normalized_attention_guidance
from source.engine.overlap_noise import overlap_noise
from tests.engine.test_guidance_variants import params_for
from tests.engine.test_speed_options import pipeline, run


@pytest.mark.parametrize("model_type", ["tiny_t2v", "tiny_t2v_2_2"])
def test_nag_changes_the_output_the_same_batched_or_not_and_is_removed_after(model_type):
    params = params_for(model_type, NAG_scale=3.0)
    plain, batched = pipeline(model_type, EngineOptions(batch_cfg=False)), pipeline(model_type, EngineOptions())
    without = run(plain, model_type, output_type="latent")
    with normalized_attention_guidance(plain, params) as report_plain:
        expected = run(plain, model_type, output_type="latent")
    with normalized_attention_guidance(batched, params) as report_batched:
        got = run(batched, model_type, output_type="latent")
    noise = np.abs(expected - got).max()
    assert noise < 1e-4
    assert guidance_batching.hook_of(batched.transformer).batched_steps > 0  # the two passes still ran as one
    assert np.abs(expected - without).mean() > max(5e-4, 10 * noise)
    experts = 2 if model_type == "tiny_t2v_2_2" else 1
    # One conditional pass per step guided; each block's cross-attention (2 blocks per expert).
    for report in (report_plain, report_batched):
        assert report == {"scale": 3.0, "tau": 3.5, "alpha": 0.5, "cross_attention_layers": 2 * experts,
                          "guided_passes": 4}
    for pipe in (plain, batched):
        assert pipe.transformer._diffusers_hook.get_hook(HOOK_NAME) is None
        assert not any(isinstance(a.processor, NagAttnProcessor) for a in cross_attentions(pipe.transformer))
    assert np.abs(run(plain, model_type, output_type="latent") - without).max() < 1e-6


def test_nag_with_nothing_blended_in_is_the_plain_cross_attention():
    plain = pipeline("tiny_t2v", EngineOptions(batch_cfg=False))
    without = run(plain, "tiny_t2v", output_type="latent")
    with normalized_attention_guidance(plain, params_for("tiny_t2v", NAG_scale=3.0, NAG_alpha=0.0)):
        same = run(plain, "tiny_t2v", output_type="latent")
    assert np.abs(same - without).max() < 1e-5


def test_nag_works_without_classifier_free_guidance():
    # NAG's use: guidance_scale 1 (distilled models) runs no negative pass, NAG still enforces the negative.
    plain = pipeline("tiny_t2v", EngineOptions())
    without = run(plain, "tiny_t2v", output_type="latent", guidance_scale=1.0)
    with normalized_attention_guidance(plain, params_for("tiny_t2v", NAG_scale=3.0, guidance_scale=1.0)) as report:
        guided = run(plain, "tiny_t2v", output_type="latent", guidance_scale=1.0)
    assert report["guided_passes"] == 4
    assert np.abs(guided - without).mean() > 5e-4


def test_vace_nag_covers_the_vace_blocks_cross_attention_too(guide_video):
    from source.media.load import load_video

    pipe = pipeline("tiny_vace", EngineOptions())
    video = load_video(str(guide_video), "video_guide", 5, (32, 32))
    with normalized_attention_guidance(pipe, params_for("tiny_vace", NAG_scale=2.0)) as report:
        run(pipe, "tiny_vace", output_type="latent", video=video)
    # 3 blocks and 2 VACE blocks, each with one cross-attention
    assert report["cross_attention_layers"] == 5 and report["guided_passes"] == 4


def test_overlap_noise_changes_a_vace_window_the_same_batched_or_not(guide_video, mask_video):
    from source.media.load import load_video

    params = params_for("tiny_vace", sliding_window_overlap_noise=100.0)
    video = load_video(str(guide_video), "video_guide", 5, (32, 32))
    mask = load_video(str(mask_video), "video_mask", 5, (32, 32))  # the first frames kept, as a window's are
    plain, batched = pipeline("tiny_vace", EngineOptions(batch_cfg=False)), pipeline("tiny_vace", EngineOptions())
    without = run(plain, "tiny_vace", output_type="latent", video=video, mask=mask)
    with overlap_noise(plain, params, 5, 4, seed=1) as frames:
        expected = run(plain, "tiny_vace", output_type="latent", video=video, mask=mask)
    with overlap_noise(batched, params, 5, 4, seed=1):
        got = run(batched, "tiny_vace", output_type="latent", video=video, mask=mask)
    assert frames == 2  # 5 continued frames: latent frames 0 (frame 0) and 1 (frames 1-4)
    assert np.abs(expected - got).max() < 1e-4
    assert guidance_batching.hook_of(batched.transformer).batched_steps > 0
    assert np.abs(expected - without).mean() > 1e-4
    with overlap_noise(plain, params, 0, 4, seed=1) as frames:  # a first window continues nothing
        assert frames == 0 and plain.transformer._diffusers_hook.get_hook("sliding_window_overlap_noise") is None
    assert np.abs(run(plain, "tiny_vace", output_type="latent", video=video, mask=mask) - without).max() < 1e-6
