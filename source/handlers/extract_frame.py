"""``extract_frame``: one frame of a video (a path, a URL or another task's output) as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from source.errors import InputUnavailable, InvalidParams
from source.handlers.common import Timings, output_file, resolve_task_input, write_png
from source.handlers.context import TaskContext, TaskOutcome
from source.handlers.task_params import TaskParams, parse_params, takes
from source.media.video import count_frames


class ExtractFrameParams(TaskParams):
    input_video_path: str | None = None
    input_video_task_id: str | None = None
    frame_index: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    output_dir: str | None = None


def _open(path: Path):
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputUnavailable(f"{path.name} is not a readable video")
    return capture


def read_frame(path: Path, index: int) -> tuple[np.ndarray, int]:
    """Frame ``index`` (negative counts from the end) as RGB, and its index from the start.

    Walks the stream instead of seeking: seeks land on keyframes or drift on variable-frame-rate files,
    and a wrong frame is worse than a slower right one. A negative index costs one counting pass.
    """
    import cv2

    target = index
    if index < 0:
        target = count_frames(path) + index
    capture = _open(path)
    try:
        position = 0
        while position <= target and capture.grab():
            position += 1
        ok, frame = capture.retrieve() if position == target + 1 else (False, None)
    finally:
        capture.release()
    if ok and target >= 0:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), target
    count = count_frames(path)
    if count == 0:
        raise InputUnavailable(f"{path.name} is not a readable video (no frame could be decoded)")
    raise InvalidParams(f"params.frame_index {index} is out of range: the video has {count} frames "
                        f"(valid: {-count}..{count - 1})")


@takes(ExtractFrameParams)
def handle_extract_frame(ctx: TaskContext) -> TaskOutcome:
    params = parse_params(ExtractFrameParams, ctx.params)
    timings = Timings()
    with timings.stage("resolve_input"):
        video = resolve_task_input(ctx, path=params.input_video_path, path_name="input_video_path",
                                   task_id=params.input_video_task_id, task_id_name="input_video_task_id", kind="video")
    ctx.check_cancelled()
    with timings.stage("decode"):
        frame, absolute_index = read_frame(video, params.frame_index)
    with timings.stage("write"):
        path = write_png(frame, output_file(ctx, f"frame_{absolute_index}.png", output_dir=params.output_dir))
    ctx.log.info("frame_extracted", frame_index=absolute_index, source=str(video))
    height, width = frame.shape[:2]
    return TaskOutcome(output_path=path, result={
        "frame_index": absolute_index, "width": width, "height": height, "source": str(video),
        "timings": timings.as_dict(),
    })
