"""The frame-level pieces of a travel: segment guide and mask, cross-fade joins, colour matching, fades."""

from __future__ import annotations

import numpy as np
import pytest

from source.errors import InvalidParams
from source.media.video import colour_match, crossfade_join, crossfade_weights
from source.orchestrators.travel_segment import GREY, Fade, OverlapAdjustments, build_segment_guide

RNG = np.random.default_rng(3)


def image(value: int) -> np.ndarray:
    return np.full((16, 16, 3), value, dtype=np.uint8)


def test_first_segment_keeps_its_two_keyframes_and_generates_the_rest():
    guide = build_segment_guide(frames=9, size=(16, 16), start_image=image(10), end_image=image(200),
                                previous_tail=None)
    assert guide.kept.tolist() == [True] + [False] * 7 + [True]
    assert (guide.guide[0] == 10).all() and (guide.guide[-1] == 200).all() and (guide.guide[1:-1] == GREY).all()
    mask = guide.mask()
    assert mask.shape == (9, 16, 16, 3) and (mask[0] == 0).all() and (mask[1:-1] == 255).all() and (mask[-1] == 0).all()


def test_later_segment_starts_from_the_previous_tail_with_its_adjustments():
    tail = RNG.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    plain = build_segment_guide(frames=9, size=(16, 16), start_image=image(10), end_image=image(200),
                                previous_tail=tail)
    assert plain.kept.tolist() == [True] * 4 + [False] * 4 + [True]
    assert np.array_equal(plain.guide[:4], tail)
    faded = build_segment_guide(frames=9, size=(16, 16), start_image=None, end_image=image(200), previous_tail=tail,
                                adjustments=OverlapAdjustments(strength=-0.5, desaturate=1.0))
    grey_tail = tail.astype(np.float32) @ np.array([0.299, 0.587, 0.114])
    expected = GREY + (grey_tail - GREY) * 0.5
    assert np.abs(faded.guide[:4, ..., 0] - expected).max() <= 1
    assert (faded.guide[:4, ..., 0] == faded.guide[:4, ..., 2]).all()  # desaturated


def test_overlap_as_long_as_the_segment_is_refused():
    with pytest.raises(InvalidParams, match="overlap 9 must be smaller than the segment's 9 frames"):
        build_segment_guide(frames=9, size=(16, 16), start_image=None, end_image=image(1),
                            previous_tail=np.zeros((9, 16, 16, 3), np.uint8))


def test_fades_show_the_keyframes_faintly_in_the_gap():
    fade = Fade.parse("fade", '{"low_point": 0.0, "high_point": 0.8, "curve_type": "linear", "duration_factor": 0.5}')
    guide = build_segment_guide(frames=13, size=(16, 16), start_image=image(228), end_image=image(28),
                                previous_tail=None, fade_out=fade, fade_in=fade)
    gap = guide.guide[1:-1, 0, 0, 0].astype(int).tolist()  # 11 frames; 6 fade out of the start, 6 into the end
    assert gap[0] == 208 and gap[-1] == 48  # 0.8 of the way from grey to each keyframe
    assert gap[:5] == sorted(gap[:5], reverse=True) and gap[-5:] == sorted(gap[-5:], reverse=True)
    with pytest.raises(InvalidParams, match="curve_type must be one of"):
        Fade.parse("fade", '{"curve_type": "wobble"}')


def test_crossfade_join_blends_each_overlap_and_drops_the_duplicates():
    a, b, c = (np.full((9, 4, 4, 3), v, dtype=np.uint8) for v in (0, 200, 100))
    joined = crossfade_join([a, b, c], [0, 4, 2], sharpness=0.0)
    assert len(joined) == 9 + 9 + 9 - 4 - 2
    weights = crossfade_weights(4, 0.0)
    assert np.allclose(weights, [0.2, 0.4, 0.6, 0.8])
    assert joined[5:9, 0, 0, 0].tolist() == [40, 80, 120, 160]
    assert (joined[9:12] == 200).all()
    sharp = crossfade_weights(4, 2.0)
    assert sharp[0] < weights[0] and sharp[-1] > weights[-1] and np.isclose(sharp[1] + sharp[2], 1.0)


def test_colour_match_moves_the_clip_to_the_reference_colours():
    clip = RNG.integers(0, 80, (5, 16, 16, 3), dtype=np.uint8)  # a dark clip
    reference = RNG.integers(150, 255, (16, 16, 3), dtype=np.uint8)
    matched = colour_match(clip, reference)
    assert abs(matched.mean() - reference.mean()) < 10 < abs(clip.mean() - reference.mean())
