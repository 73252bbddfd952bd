"""``generate_depth``: a greyscale depth map (near = bright) of an image, as a PNG."""

from __future__ import annotations

from source.handlers.common import (
    ImageTaskParams,
    Timings,
    load_task_image,
    output_file,
    write_png,
)
from source.handlers.context import TaskContext, TaskOutcome
from source.handlers.task_params import parse_params, takes
from source.media.depth import DEFAULT_DEPTH_MODEL, load_depth_model, model_spec, to_grey_png_array


class DepthParams(ImageTaskParams):
    model: str = DEFAULT_DEPTH_MODEL


@takes(DepthParams)
def handle_generate_depth(ctx: TaskContext) -> TaskOutcome:
    params = parse_params(DepthParams, ctx.params)
    spec = model_spec(params.model)  # an unknown model fails before any input is fetched
    timings = Timings()
    with timings.stage("load_input"):
        _, image = load_task_image(ctx, params)
    with timings.stage("load_model"):
        estimator = load_depth_model(params.model, ctx.models)
    ctx.check_cancelled()
    with timings.stage("estimate"):
        depth = estimator.estimate(image)
    with timings.stage("write"):
        grey = to_grey_png_array(depth)
        path = write_png(grey[..., None].repeat(3, axis=2), output_file(ctx, "depth.png", output_dir=params.output_dir))
    ctx.log.info("depth_estimated", model=params.model)
    height, width = image.shape[:2]
    return TaskOutcome(output_path=path, result={
        "model": params.model, "weights": spec.describe(), "width": width, "height": height,
        "depth_range": [float(depth.min()), float(depth.max())], "timings": timings.as_dict(),
    })
