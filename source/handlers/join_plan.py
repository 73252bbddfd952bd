"""The frame arithmetic of a join chain, in one place: which frames of two clips a VACE bridge sees and
regenerates, and how clips and bridges are stitched (and their sound kept) afterwards.

A bridge between clip A and clip B is ``context`` frames of A's end, ``gap`` new frames, ``context`` frames of
B's start (VACE makes 4n+1 frames: the gap grows to fit). Insert mode keeps both clips whole and adds the gap;
replace mode takes the gap's frames out of the clips' boundary (``gap_from_clip1`` of A's end,
``gap_from_clip2`` of B's start), so the clips keep their total length. When stitching, each bridge's
context is cross-faded over ``blend`` frames into the clip it came from; frames of a clip outside its bridges
are the clip's own.

    stitched frames = sum(clip frames) + sum(gap - gap_from_clip1 - gap_from_clip2)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import Field

from source.engine.params import valid_frame_count
from source.errors import InvalidParams
from source.handlers.task_params import TaskParams
from source.media.video import crossfade_join

GRAY = 127


class ClipRef(TaskParams):
    """A clip as children read it: a video (URL or path), optionally a frame range of it, optionally
    played backwards (loop_first_clip) — no intermediate file for another worker to fetch."""

    url: str
    first: int = Field(0, ge=0)
    count: int | None = Field(None, ge=1)
    reverse: bool = False


class JoinPlan(TaskParams):
    """One bridge, decided by the orchestrator from the clips' lengths."""

    context: int = Field(ge=1)
    gap: int = Field(ge=1)
    gap_from_clip1: int = Field(0, ge=0)
    gap_from_clip2: int = Field(0, ge=0)
    blend: int = Field(ge=0)
    requested_gap: int = Field(ge=1)
    keep_bridging_images: bool = False
    # Kept copies of the last context frame after it, only to reach 4n+1 frames when the gap must stay exact
    # (an edit regenerates exactly its portion); dropped after the generation.
    pad: int = Field(0, ge=0, le=3)

    @property
    def frames(self) -> int:
        """What the VACE generation makes (4n+1)."""
        return 2 * self.context + self.gap + self.pad

    @property
    def added(self) -> int:
        return self.gap - self.gap_from_clip1 - self.gap_from_clip2


def plan_join(index: int, len_a: int, len_b: int, *, context: int, gap: int, replace: bool, blend: int,
              keep_bridging_images: bool, exact_gap: bool = False) -> JoinPlan:
    used_context = min(context, len_a, len_b)
    used_gap = gap if exact_gap else valid_frame_count(2 * used_context + gap, toward="up") - 2 * used_context
    pad = valid_frame_count(2 * used_context + used_gap, toward="up") - 2 * used_context - used_gap
    from_a = used_gap // 2 if replace else 0
    from_b = used_gap - from_a if replace else 0
    if len_a < from_a + used_context or len_b < from_b + used_context:
        raise InvalidParams(
            f"join {index}: replace_mode takes {from_a} frames from the end of clip {index} ({len_a} frames) and "
            f"{from_b} from the start of clip {index + 1} ({len_b} frames), plus {used_context} context frames "
            f"each; lower gap_frame_count or context_frame_count, or use longer clips")
    return JoinPlan(context=used_context, gap=used_gap, gap_from_clip1=from_a, gap_from_clip2=from_b,
                    blend=min(blend, used_context), requested_gap=gap, keep_bridging_images=keep_bridging_images,
                    pad=pad)


def check_kept_lengths(lengths: Sequence[int], plans: Sequence[JoinPlan]) -> None:
    """Every clip keeps enough of its own frames between its bridges for their cross-fades."""
    for i, length in enumerate(lengths):
        taken = (plans[i - 1].gap_from_clip2 if i else 0) + (plans[i].gap_from_clip1 if i < len(plans) else 0)
        fades = (plans[i - 1].blend if i else 0) + (plans[i].blend if i < len(plans) else 0)
        if length - taken < max(fades, 1):
            raise InvalidParams(f"clip {i} has {length} frames; its bridges take {taken} of them and cross-fade "
                                f"over {fades}: lower gap_frame_count or context_frame_count")


def stitched_length(lengths: Sequence[int], plans: Sequence[JoinPlan]) -> int:
    return sum(lengths) + sum(plan.added for plan in plans)


def bridge_guide(a: np.ndarray, b: np.ndarray, plan: JoinPlan) -> tuple[np.ndarray, np.ndarray]:
    """(guide frames, regenerate mask) for the bridge from clip ``a`` to clip ``b``; with keep_bridging_images
    A's last and B's first context frame also stand at a third and two thirds of the gap, kept."""
    c, g = plan.context, plan.gap
    before = a[len(a) - plan.gap_from_clip1 - c: len(a) - plan.gap_from_clip1]
    after = b[plan.gap_from_clip2: plan.gap_from_clip2 + c]
    guide = np.concatenate([before, np.full((g, *a.shape[1:]), GRAY, np.uint8), after,
                            np.repeat(after[-1:], plan.pad, axis=0)])
    regenerate = np.r_[np.zeros(c, bool), np.ones(g, bool), np.zeros(c + plan.pad, bool)]
    first, second = g // 3, 2 * g // 3
    if plan.keep_bridging_images and g >= 3 and first < second:
        guide[c + first], guide[c + second] = before[-1], after[0]
        regenerate[[c + first, c + second]] = False
    return guide, regenerate


def _layout(lengths: Sequence[int], plans: Sequence[JoinPlan]) -> list[tuple[int | None, int, int, int]]:
    """The stitched video's pieces in order: (clip index or None for a bridge, first frame taken, frames
    taken, frames cross-faded with the piece before)."""
    layout: list[tuple[int | None, int, int, int]] = []
    for i, length in enumerate(lengths):
        head = plans[i - 1].gap_from_clip2 if i else 0
        tail = plans[i].gap_from_clip1 if i < len(plans) else 0
        layout.append((i, head, length - head - tail, plans[i - 1].blend if i else 0))
        if i < len(plans):
            plan = plans[i]
            layout.append((None, plan.context - plan.blend, plan.gap + 2 * plan.blend, plan.blend))
    return layout


def stitch_frames(clips: Sequence[np.ndarray], bridges: Sequence[np.ndarray],
                  plans: Sequence[JoinPlan]) -> np.ndarray:
    """Clips and the bridges between them as one video."""
    pieces, overlaps, bridge = [], [], iter(enumerate(bridges))
    for clip_index, first, count, overlap in _layout([len(c) for c in clips], plans):
        if clip_index is None:
            index, frames = next(bridge)
            if len(frames) != plans[index].frames:
                raise InvalidParams(f"bridge {index} has {len(frames)} frames; its plan makes {plans[index].frames}")
        else:
            frames = clips[clip_index]
        pieces.append(frames[first: first + count])
        overlaps.append(overlap)
    return crossfade_join(pieces, overlaps, 0.0)


def stitch_spans(lengths: Sequence[int], plans: Sequence[JoinPlan], origins: Sequence[tuple[Path | None, int]],
                 bridge_origins: Sequence[tuple[Path | None, int]] = ()) -> list[tuple[Path | None, int, int]]:
    """Where each stretch of the stitched video comes from, for its sound: (file or None for generated
    frames, first frame in that file, frame count). ``origins[i]``: clip i's file and the frame of that file
    it starts at (None for a clip whose sound is not its file's, e.g. a reversed one); ``bridge_origins[j]``
    the same for bridge j's frames (an edit keeps the source's sound under a portion of unchanged length;
    silence by default). Through each
    cross-fade the outgoing stretch's sound runs on; the incoming one's starts after it."""
    spans, bridges = [], iter(range(len(plans)))
    for clip_index, first, count, overlap in _layout(lengths, plans):
        if clip_index is None:
            index = next(bridges)
            source, offset = bridge_origins[index] if index < len(bridge_origins) else (None, 0)
        else:
            source, offset = origins[clip_index]
        spans.append((source, offset + first + overlap, count - overlap))
    return spans
