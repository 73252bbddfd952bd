"""A crossfade join: ``travel_stitch`` with ``clip_urls`` (Reigh's "join clips" without generation): the given
clips end to end, ``frame_overlap_settings_expanded[i]`` frames of clip i and clip i+1 blended, no orchestrator.

Length: sum of the clips' frames minus the sum of the overlaps. Size and rate: the first clip's (or ``fps``).
Sound: ``audio_url`` over the whole video, else the clips' own audio where they have it.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from source.errors import InvalidParams
from source.handlers.app_fields import split_app_fields
from source.handlers.context import TaskContext, TaskOutcome
from source.handlers.task_params import TaskParams, parse_params
from source.media.audio import add_soundtrack, spans_to_pieces
from source.media.video import crossfade_join, read_video, save_video, video_fps
from source.task_files.fetch import resolve_input

MAX_CLIPS = 100


class CrossfadeJoinParams(TaskParams):
    clip_urls: list[str] = Field(min_length=2, max_length=MAX_CLIPS)
    frame_overlap_settings_expanded: list[int]
    crossfade_sharp_amt: float = Field(0.3, ge=0.0, le=10.0)
    fps: int | None = Field(None, ge=1, le=120)
    audio_url: str | None = None
    # Reigh repeats the request here (run_id, the clips and overlaps again); compared, not trusted twice.
    full_orchestrator_payload: dict[str, Any] = Field(default_factory=dict)


def is_crossfade_join(params: dict[str, Any]) -> bool:
    return "clip_urls" in params


def handle_crossfade_join(ctx: TaskContext) -> TaskOutcome:
    p = parse_params(CrossfadeJoinParams, ctx.params)
    overlaps = p.frame_overlap_settings_expanded
    if len(overlaps) != len(p.clip_urls) - 1:
        raise InvalidParams(f"params.frame_overlap_settings_expanded has {len(overlaps)} entries; "
                            f"{len(p.clip_urls)} clips need {len(p.clip_urls) - 1} (one per boundary)")
    if any(value <= 0 for value in overlaps):
        raise InvalidParams(f"params.frame_overlap_settings_expanded must be positive frame counts, got {overlaps}")
    payload = p.full_orchestrator_payload
    for key in ("clip_urls", "frame_overlap_settings_expanded"):
        if key in payload and payload[key] != getattr(p, key):
            raise InvalidParams(f"params.full_orchestrator_payload.{key} differs from params.{key}")
    paths = [resolve_input(url, f"clip_urls[{i}]", ctx.inputs, kind="video") for i, url in enumerate(p.clip_urls)]
    audio = resolve_input(p.audio_url, "audio_url", ctx.inputs, kind=None) if p.audio_url else None
    first = read_video(paths[0], "clip_urls[0]")
    size = (first.shape[2], first.shape[1])
    clips = [first] + [read_video(path, f"clip_urls[{i}]", size) for i, path in enumerate(paths[1:], 1)]
    for i, overlap in enumerate(overlaps):
        if overlap > min(len(clips[i]), len(clips[i + 1])):
            raise InvalidParams(f"params.frame_overlap_settings_expanded[{i}] is {overlap}, longer than clip {i} "
                                f"({len(clips[i])} frames) or clip {i + 1} ({len(clips[i + 1])} frames)")
    ctx.check_cancelled()
    final = crossfade_join(clips, [0, *overlaps], p.crossfade_sharp_amt)
    fps = p.fps or video_fps(paths[0])
    path = save_video(final, ctx.output_path("crossfade_join.mp4"), fps)
    # The outgoing clip's sound runs through each overlap; the incoming one's starts after it.
    spans = [(paths[0], 0, len(clips[0]))] + [(paths[i], overlaps[i - 1], len(clips[i]) - overlaps[i - 1])
                                              for i in range(1, len(clips))]
    sound = add_soundtrack(path, audio_file=audio, pieces=spans_to_pieces(spans, fps))
    unread = p.ignored_params() + [f"full_orchestrator_payload.{key}" for key in payload if key not in (
        "run_id", "clip_urls", "frame_overlap_settings_expanded", "audio_url")]
    ctx.log.info("clips_crossfaded", clips=len(clips), frames=len(final), audio=sound)
    return TaskOutcome(output_path=path, result={
        "frames": len(final), "fps": fps, "clip_frames": [len(c) for c in clips], "frame_overlaps": overlaps,
        "resolution": f"{size[0]}x{size[1]}", "audio": sound, "run_id": payload.get("run_id"),
        **split_app_fields(unread)})
