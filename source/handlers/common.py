"""Steps every utility handler shares: inputs named by path, URL or another task's output, image
reading, output files inside the output root, and per-stage timings for ``result``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from pydantic import Field

from source.db.models import TaskStatus
from source.errors import InputUnavailable, InvalidParams
from source.handlers.context import TaskContext
from source.handlers.task_params import TaskParams
from source.media.atomic_files import atomic_file
from source.task_files.fetch import resolve_input
from source.task_files.paths import WORK_FOLDER, task_output_name, unclaimed_file, under_output_root
from source.task_files.policy import MAX_IMAGE_PIXELS, InputKind


class Timings:
    """Seconds spent per stage, ready to store as ``result["timings"]``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 4)

    def as_dict(self) -> dict[str, float]:
        return {**self.seconds, "total": round(sum(self.seconds.values()), 4)}


def dependency_output(ctx: TaskContext, task_id: str, name: str) -> str:
    """The ``output_location`` of task ``task_id`` (a path or URL), or a clear error saying why not."""
    row = ctx.linked_task(task_id)
    if row is None:
        raise InputUnavailable(f"params.{name}: no task with id {task_id!r}")
    if row.status is not TaskStatus.COMPLETE:
        raise InputUnavailable(f"params.{name}: task {task_id!r} is {row.status.value}, not Complete")
    if not row.output_location:
        raise InputUnavailable(f"params.{name}: task {task_id!r} is Complete but has no output_location")
    return ctx.output_of(row.output_location)


def resolve_task_input(ctx: TaskContext, *, path: str | None, path_name: str,
                       task_id: str | None, task_id_name: str, kind: InputKind) -> Path:
    """A local file of ``kind`` from either a path/URL param or another task's output (the path wins if both)."""
    if path:
        return resolve_input(path, path_name, ctx.inputs, kind=kind)
    if task_id:
        return resolve_input(dependency_output(ctx, task_id, task_id_name), task_id_name, ctx.inputs, kind=kind)
    raise InvalidParams(f"params: give {path_name} or {task_id_name}")


def read_image_rgb(path: Path, name: str) -> np.ndarray:
    """An RGB uint8 array, upright per its EXIF orientation; InputUnavailable for a file that is not an
    image or whose header declares more than MAX_IMAGE_PIXELS (checked before decoding)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InputUnavailable(f"params.{name}: {path.name} is {width}x{height}; the limit is "
                                       f"{MAX_IMAGE_PIXELS} pixels")
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise InputUnavailable(f"params.{name}: {path.name} is not a readable image") from exc


def write_png(image_rgb: np.ndarray, path: Path) -> Path:
    import cv2

    with atomic_file(path) as temp:
        if not cv2.imwrite(str(temp), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
    return path


def output_file(ctx: TaskContext, suffix: str, *, output_dir: str | None = None,
                output_path: str | None = None) -> Path:
    """Where a handler writes: ``output_path`` if given (kept inside the output root, same extension as
    ``suffix``), else ``<output root>[/output_dir]/<task_id>_<suffix>``."""
    if output_path:
        wanted = Path(suffix).suffix
        path = _outside_work_folders(ctx, under_output_root(ctx.output_dir, output_path), "output_path")
        if path.suffix.lower() != wanted:
            raise InvalidParams(f"params.output_path must end in {wanted}, got {output_path!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        return unclaimed_file(path, ctx.task.id)
    if output_dir:
        # A relative sub-folder, or an absolute one that already lies inside the output root.
        folder = _outside_work_folders(ctx, under_output_root(ctx.output_dir, output_dir), "output_dir")
        path = folder / task_output_name(ctx.task.id, suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    return ctx.output_path(suffix)


def _outside_work_folders(ctx: TaskContext, path: Path, name: str) -> Path:
    """``path`` unless it lies in the tasks' scratch folders (another task's downloads and frames)."""
    if path.relative_to(ctx.output_dir).parts[:1] == (WORK_FOLDER,):
        raise InvalidParams(f"params.{name} may not point into the {WORK_FOLDER} folder")
    return path


class ImageTaskParams(TaskParams):
    """An image named by path/URL or by the task that produced it."""

    input_image_path: str | None = Field(default=None, max_length=10_000)
    input_image_task_id: str | None = Field(default=None, max_length=200)
    output_dir: str | None = Field(default=None, max_length=1_000)


def load_task_image(ctx: TaskContext, params: ImageTaskParams) -> tuple[Path, np.ndarray]:
    path = resolve_task_input(ctx, path=params.input_image_path, path_name="input_image_path",
                              task_id=params.input_image_task_id, task_id_name="input_image_task_id", kind="image")
    return path, read_image_rgb(path, "input_image_path" if params.input_image_path else "input_image_task_id")
