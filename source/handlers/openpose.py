"""``generate_openpose``: the OpenPose skeleton of the person in an image, drawn on black."""

from __future__ import annotations

from source.errors import NothingDetected
from source.handlers.common import (
    ImageTaskParams,
    Timings,
    load_task_image,
    output_file,
    write_png,
)
from source.handlers.context import TaskContext, TaskOutcome
from source.handlers.task_params import parse_params, takes
from source.media.pose.detect import default_detector
from source.media.pose.draw import draw_poses


@takes(ImageTaskParams)
def handle_generate_openpose(ctx: TaskContext) -> TaskOutcome:
    params = parse_params(ImageTaskParams, ctx.params)
    timings = Timings()
    with timings.stage("load_input"):
        source, image = load_task_image(ctx, params)
    with timings.stage("load_model"):
        detector = default_detector(ctx.models)
    ctx.check_cancelled()
    with timings.stage("detect"):
        poses = detector.detect(image)
    if not poses:
        raise NothingDetected(f"no person detected in {source.name}")
    height, width = image.shape[:2]
    with timings.stage("draw"):
        path = write_png(draw_poses(poses, width, height), output_file(ctx, "openpose.png", output_dir=params.output_dir))
    ctx.log.info("pose_drawn", people=len(poses), detector=detector.name)
    return TaskOutcome(output_path=path, result={
        "detector": detector.name, "people": len(poses), "keypoints": [pose.as_dict() for pose in poses],
        "width": width, "height": height, "timings": timings.as_dict(),
    })
