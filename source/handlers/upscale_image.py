"""``image-upscale``: an image made ``scale_factor`` times larger by a super-resolution model (Swin2SR,
source/media/upscale.py), written as png, jpeg or webp."""

from __future__ import annotations

from typing import Literal

from PIL import Image
from pydantic import Field

from source.engine.params import IMAGE_FORMATS
from source.errors import InvalidParams
from source.handlers.common import Timings, output_file, read_image_rgb
from source.handlers.context import TaskContext, TaskOutcome
from source.handlers.task_params import TaskParams, parse_params, takes
from source.media.upscale import DEFAULT_UPSCALE_MODEL, MAX_SCALE, lanczos_upscale, load_upscaler, model_spec
from source.task_files.fetch import resolve_input

SUFFIXES = {"png": "png", "jpeg": "jpg", "webp": "webp"}


class UpscaleParams(TaskParams):
    image: str | None = Field(None, max_length=10_000)
    image_url: str | None = Field(None, max_length=10_000)
    scale_factor: float = Field(2.0, ge=1.0, le=MAX_SCALE)
    output_format: str = "jpeg"
    upscale_method: Literal["model", "lanczos"] = "model"  # "lanczos": a plain resize, only when asked
    upscale_model: str = DEFAULT_UPSCALE_MODEL
    # Reigh's lineage fields (its own bookkeeping, read back on completion)
    generation_id: str | None = None
    shot_id: str | None = None
    based_on: str | None = None
    source_variant_id: str | None = None
    placement_intent: object = None


@takes(UpscaleParams)
def handle_image_upscale(ctx: TaskContext) -> TaskOutcome:
    p = parse_params(UpscaleParams, ctx.params)
    fmt = "jpeg" if p.output_format.lower() in ("jpg", "jpeg") else p.output_format.lower()
    if fmt not in IMAGE_FORMATS:
        raise InvalidParams(f"params.output_format {p.output_format!r} is not supported; choose one of "
                            f"{', '.join(IMAGE_FORMATS)}")
    spec = model_spec(p.upscale_model)  # an unknown model fails before any input is fetched
    timings = Timings()
    with timings.stage("load_input"):
        name = "image" if p.image else "image_url"
        path = resolve_input(p.image or p.image_url, name, ctx.inputs, kind="image")
        source = Image.fromarray(read_image_rgb(path, name))
    with timings.stage("load_model"):
        upscaler = load_upscaler(p.upscale_model) if p.upscale_method == "model" else None
    ctx.check_cancelled()
    with timings.stage("upscale"):
        image = (upscaler.upscale(source, p.scale_factor, method=p.upscale_method) if upscaler
                 else lanczos_upscale(source, p.scale_factor))
    with timings.stage("write"):
        out = output_file(ctx, f"upscaled.{SUFFIXES[fmt]}")
        image.save(out, **({} if fmt == "png" else {"quality": 95}))
    result = {"model": p.upscale_model if upscaler else None, "weights": spec.describe() if upscaler else None,
              "method": p.upscale_method, "scale_factor": p.scale_factor, "input_size": list(source.size),
              "output_size": list(image.size), "output_format": fmt, "timings": timings.as_dict()}
    if ignored := p.ignored_params():
        result["ignored_params"] = ignored
    ctx.log.info("image_upscaled", **{k: result[k] for k in ("method", "scale_factor", "output_size")})
    return TaskOutcome(output_path=out, result=result)
