"""edit_video_orchestrator (Reigh's "edit video"): regenerate the listed portions of a video with VACE and keep
every other frame as it was.

The frames outside the portions become "keeper" clips (frame ranges of the source, no files written); each
portion is the bridge between the keepers around it, generated from their context frames, with exactly
``gap_frame_count`` new frames (the portion's own length when not given) and no cross-fade, so the keepers'
frames come out as the source's. Portions come in frames (``start_frame``, ``end_frame`` exclusive, as the
app computes them; ``frame_count`` = end - start + 1 marks an inclusive end) or in seconds (``start_time``,
``end_time``). ``replace_mode`` keeps each portion's first and last frame as anchors and regenerates between.

    output frames = source frames - sum(regenerated portion frames) + sum(gap frames)
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from source.errors import InvalidParams
from source.generation.conversion import lift_orchestrator_details, normalise_resolution
from source.handlers.context import TaskContext, TaskOutcome
from source.handlers.join_plan import ClipRef
from source.handlers.task_params import TaskParams, parse_params, takes
from source.media.video import video_info
from source.orchestrators.join_clips import MAX_FRAMES, JoinOverride, JoinSettings, spawn_join_run
from source.task_files.fetch import resolve_input

MAX_PORTIONS = 50
WHERE = "params.orchestrator_details"


class Portion(TaskParams):
    start_frame: int | None = Field(None, ge=0)
    end_frame: int | None = Field(None, ge=0)
    start_time: float | None = Field(None, ge=0)
    end_time: float | None = Field(None, ge=0)
    frame_count: int | None = Field(None, ge=0)
    gap_frame_count: int | None = Field(None, ge=1, le=MAX_FRAMES)
    prompt: str | None = None


class LoraEntry(TaskParams):
    path: str = Field(min_length=1)
    strength: float = 1.0


class EditDetails(JoinSettings):
    source_video_url: str = Field(min_length=1)
    source_video_fps: float | None = Field(None, gt=0, le=240)
    source_video_total_frames: int | None = Field(None, ge=1)
    portions_to_regenerate: list[Portion] = Field(min_length=1, max_length=MAX_PORTIONS)
    loras: list[LoraEntry] = Field(default_factory=list)


@takes(EditDetails, translated=True)
def handle_edit_video_orchestrator(ctx: TaskContext) -> TaskOutcome:
    lifted = lift_orchestrator_details(ctx.params)
    d = parse_params(EditDetails, lifted.params)
    info = video_info(resolve_input(d.source_video_url, "source_video_url", ctx.inputs, kind="video"),
                      "source_video_url")
    fps = d.source_video_fps or info.fps
    ranges = [_frames(i, portion, fps, d.replace_mode) for i, portion in enumerate(d.portions_to_regenerate)]
    order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
    keepers, previous_end = [], 0
    for i in order:
        start, end = ranges[i]
        if start < previous_end or end <= start:
            raise InvalidParams(f"{WHERE}.portions_to_regenerate[{i}]: frames {start}..{end - 1} overlap another "
                                f"portion or are empty")
        if start == 0 or end >= info.frames:
            raise InvalidParams(f"{WHERE}.portions_to_regenerate[{i}]: frames {start}..{end - 1} of {info.frames} "
                                f"leave no frame before or after the portion; an edit is generated from the "
                                f"frames around it")
        keepers.append(ClipRef(url=d.source_video_url, first=previous_end, count=start - previous_end))
        previous_end = end
    keepers.append(ClipRef(url=d.source_video_url, first=previous_end, count=info.frames - previous_end))
    portions = [d.portions_to_regenerate[i] for i in order]
    overrides = [
        (d.per_join_settings[j] if j < len(d.per_join_settings) else JoinOverride()).model_copy(update={
            "gap_frame_count": portion.gap_frame_count or ranges[i][1] - ranges[i][0],
            **({"prompt": portion.prompt} if portion.prompt else {})})
        for j, (i, portion) in enumerate(zip(order, portions, strict=True))]
    # An edit keeps the source's frames: its size and rate, whatever the app's project resolution says.
    adjusted = {}
    if d.resolution is not None and normalise_resolution(d.resolution) != "{}x{}".format(*info.size):
        adjusted["resolution"] = {"requested": d.resolution, "used": list(info.size),
                                  "reason": "an edit keeps the source video's frames and size"}
    settings = d.model_copy(update={
        "per_join_settings": overrides, "replace_mode": False, "fps": round(fps), "use_input_video_fps": False,
        "resolution": list(info.size), "use_input_video_resolution": False,
        "additional_loras": {**d.additional_loras, **{lora.path: lora.strength for lora in d.loras}}})
    result: dict[str, Any] = {"source_frames": info.frames, "regenerated_frames": [list(ranges[i]) for i in order]}
    if d.source_video_total_frames not in (None, info.frames):
        result["source_video_total_frames"] = {"sent": d.source_video_total_frames, "decoded": info.frames}
    if adjusted:
        result["adjusted_for_edit"] = adjusted
    ignored = d.ignored_params() + [f"portions_to_regenerate[{i}].{key}" for i, p in enumerate(d.portions_to_regenerate)
                                    for key in p.ignored_params()]
    # where a portion keeps its length, the source's sound plays on under the regenerated frames
    sound = [ClipRef(url=d.source_video_url, first=start, count=end - start) if o.gap_frame_count == end - start
             else None for o, (start, end) in zip(overrides, (ranges[i] for i in order), strict=True)]
    return spawn_join_run(ctx, settings, keepers, parallel=True, ignored=ignored, exact_gaps=True, blend=0,
                          result=result, output_name="edited.mp4", bridge_sound=sound)


def _frames(index: int, portion: Portion, fps: float, replace_mode: bool) -> tuple[int, int]:
    """[start, end) of the frames portion ``index`` regenerates."""
    if portion.start_frame is not None and portion.end_frame is not None:
        start, end = portion.start_frame, portion.end_frame
        if portion.frame_count == end - start + 1:
            end += 1  # an inclusive end (the older worker's convention)
    elif portion.start_time is not None and portion.end_time is not None:
        start, end = round(portion.start_time * fps), round(portion.end_time * fps)
    else:
        raise InvalidParams(f"{WHERE}.portions_to_regenerate[{index}] needs start_frame and end_frame, or "
                            f"start_time and end_time (seconds)")
    if replace_mode:
        start, end = start + 1, end - 1  # the portion's first and last frame stay, as anchors
    return start, end
