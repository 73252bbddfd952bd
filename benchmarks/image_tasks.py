"""Each image task type (tiny models): a Reigh-shaped row through a real worker.py process vs the bare diffusers
(or transformers) call with the same inputs, ratios measured in one run.

"Ours" is insert row -> claim -> params -> LoRA roles -> HeadlessTaskQueue -> engine -> image file -> row
Complete, timed by this process as a client sees it (the model resident after a warm-up row of the same type).
"Bare" is the plain pipeline call (sibling pipelines by ``from_pipe``) plus writing the image with PIL, in this
process while the worker idles. Runs are interleaved; prints each type's medians and their ratio.

    python benchmarks/image_tasks.py [--runs 3] [--only qwen_image,image-upscale]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.worker_overhead import wait_complete  # noqa: E402
from source.db.models import NewTask  # noqa: E402
from source.db.sqlite import SqliteTaskStore  # noqa: E402
from source.engine.families.qwen import green_composite  # noqa: E402
from source.engine.loading.pipeline import weights_path  # noqa: E402
from source.engine.model_defs import load_model_def  # noqa: E402
from tests.images.conftest import (  # noqa: E402
    image_generation_row,
    magic_edit_row,
    masked_edit_row,
    upscale_row,
    z_image_i2i_row,
)

SIZE, STEPS = 32, 2


def _pipe(model: str, class_name: str | None = None):
    import diffusers

    from source.engine.families import family_for

    definition = load_model_def(model)
    folder = weights_path(definition)
    family = family_for(definition.architecture)
    pipe = family.pipeline_class().from_pretrained(folder, dtype=torch.float32, **family.extra_components(folder))
    if class_name:
        pipe = getattr(diffusers, class_name).from_pipe(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _save(image: np.ndarray, path: Path, fmt: str = "PNG") -> None:
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(path, fmt)


def _small_references(pipe) -> None:
    """The tiny edit definitions' reference areas (defaults/tiny_qwen_image_edit.json), set the plain way."""
    module = sys.modules[type(pipe).__module__]
    if hasattr(module, "VAE_IMAGE_SIZE"):
        module.VAE_IMAGE_SIZE = module.CONDITION_IMAGE_SIZE = 1024
    else:
        original = module.calculate_dimensions
        module.calculate_dimensions = lambda area, ratio: original(1024 if area == 1024 * 1024 else area, ratio)


def bare_calls(pics: dict[str, str], out: Path) -> dict[str, Callable[[], None]]:
    common = {"height": SIZE, "width": SIZE, "num_inference_steps": STEPS, "output_type": "np",
              "max_sequence_length": 16}
    source, mask = Image.open(pics["source"]).convert("RGB"), Image.open(pics["mask"]).convert("L")
    t2i, z = _pipe("tiny_qwen_image"), _pipe("tiny_z_image")
    i2i, z_i2i = _pipe("tiny_qwen_image", "QwenImageImg2ImgPipeline"), _pipe("tiny_z_image", "ZImageImg2ImgPipeline")
    edit, plus = _pipe("tiny_qwen_image_edit"), _pipe("tiny_qwen_image_edit_plus")
    _small_references(edit)
    _small_references(plus)
    from transformers import Swin2SRForImageSuperResolution

    from source.engine.tiny import materialise

    swin = Swin2SRForImageSuperResolution.from_pretrained(materialise("swin2sr_x2")).eval()

    def gen(pipe, **kwargs) -> np.ndarray:
        with torch.inference_mode():
            return pipe(prompt="a lighthouse at dusk", generator=torch.Generator().manual_seed(7), **common,
                        **kwargs).images

    def hires() -> None:
        base = gen(t2i, true_cfg_scale=1.0)[0]
        big = Image.fromarray((base * 255).round().astype(np.uint8)).resize((64, 64), Image.BICUBIC)
        with torch.inference_mode():
            image = i2i(prompt="a lighthouse at dusk", image=big, strength=0.5, generator=torch.Generator()
                        .manual_seed(7), **{**common, "height": 64, "width": 64, "num_inference_steps": 1}).images[0]
        _save(image, out / "bare.png")

    def upscale() -> None:
        pixels = torch.from_numpy(np.asarray(source)).permute(2, 0, 1)[None].float() / 255
        with torch.inference_mode():
            image = swin(pixel_values=pixels).reconstruction[0].clamp(0, 1).permute(1, 2, 0).numpy()
        _save(image, out / "bare.jpg", "JPEG")

    composite = green_composite(source, mask)
    return {
        "qwen_image": lambda: _save(gen(t2i, true_cfg_scale=1.0)[0], out / "bare.png"),
        "qwen_image_2512": lambda: _save(gen(t2i, true_cfg_scale=1.0)[0], out / "bare.png"),
        "z_image_turbo": lambda: _save(gen(z, guidance_scale=0.0)[0], out / "bare.png"),
        "qwen_image_edit": lambda: _save(gen(edit, image=source, true_cfg_scale=1.0)[0], out / "bare.jpg", "JPEG"),
        "image_inpaint": lambda: _save(gen(edit, image=composite, true_cfg_scale=1.0)[0], out / "bare.png"),
        "annotated_image_edit": lambda: _save(gen(edit, image=composite, true_cfg_scale=1.0)[0], out / "bare.png"),
        "qwen_image_style": lambda: _save(gen(plus, image=[source, Image.open(pics["reference"]).convert("RGB")],
                                              true_cfg_scale=1.0)[0], out / "bare.png"),
        "qwen_image_hires": hires,
        "z_image_turbo_i2i": lambda: _save(gen(z_i2i, image=source, strength=0.6, guidance_scale=0.0)[0],
                                           out / "bare.png"),
        "image-upscale": upscale,
    }


def rows(pics: dict[str, str]) -> dict[str, dict]:
    steps = {"steps": STEPS}
    return {
        "qwen_image": image_generation_row("tiny_qwen_image"),
        "qwen_image_2512": image_generation_row("tiny_qwen_image"),
        "z_image_turbo": image_generation_row("tiny_z_image"),
        "qwen_image_edit": magic_edit_row(pics["source"], model="tiny_qwen_image_edit", **steps),
        "image_inpaint": masked_edit_row(pics["source"], pics["mask"], model="tiny_qwen_image_edit", **steps),
        "annotated_image_edit": masked_edit_row(pics["source"], pics["mask"], model="tiny_qwen_image_edit", **steps),
        "qwen_image_style": image_generation_row("qwen-image", style_reference_image=pics["source"],
                                                 subject_reference_image=pics["reference"],
                                                 style_reference_strength=1.1,
                                                 qwen_edit_model="tiny_qwen_image_edit_plus"),
        "qwen_image_hires": image_generation_row("tiny_qwen_image", hires_scale=2, hires_steps=1),
        "z_image_turbo_i2i": z_image_i2i_row(pics["source"], model="tiny_z_image"),
        "image-upscale": upscale_row(pics["source"], upscale_model="tiny_swin2sr_x2"),
    }


def pictures(folder: Path) -> dict[str, str]:
    rng = np.random.default_rng(11)
    paths = {}
    for name in ("source", "reference"):
        paths[name] = str(folder / f"{name}.png")
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(paths[name])
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:24, 8:24] = 255
    paths["mask"] = str(folder / "mask.png")
    Image.fromarray(mask).save(paths["mask"])
    return paths


@click.command()
@click.option("--runs", default=3, show_default=True)
@click.option("--only", default="", help="comma-separated task types (default: all)")
def main(runs: int, only: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        pics = pictures(out)
        store = SqliteTaskStore(out / "tasks.db")
        store.migrate()
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py"), "--db-file", str(out / "tasks.db"), "--main-output-dir",
             str(out / "outputs"), "--worker", "bench", "--log-format", "json", "--input-roots", str(out)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            measured = measure(store, rows(pics), bare_calls(pics, out), runs, [t for t in only.split(",") if t])
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    print(f"{'task type':<22} {'bare s':>8} {'worker s':>9} {'ratio':>6}   (tiny models, {SIZE}x{SIZE}, "
          f"{STEPS} steps, medians of {runs})")
    for task_type, (bare, ours) in measured.items():
        print(f"{task_type:<22} {bare:>8.3f} {ours:>9.3f} {ours / bare:>6.2f}")


def measure(store, all_rows: dict[str, dict], bares: dict[str, Callable[[], None]], runs: int,
            only: list[str]) -> dict[str, tuple[float, float]]:
    measured = {}
    for task_type, params in all_rows.items():
        if only and task_type not in only:
            continue

        def ours(task_type: str = task_type, params: dict = params) -> None:
            wait_complete(store, store.add_task(NewTask(task_type, params)))

        ours()  # warm-up: the worker loads (or switches to) this row's model
        bares[task_type]()
        times: dict[str, list[float]] = {"bare": [], "ours": []}
        for _ in range(runs):
            for name, run in (("bare", bares[task_type]), ("ours", ours)):
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
        measured[task_type] = (statistics.median(times["bare"]), statistics.median(times["ours"]))
    return measured


if __name__ == "__main__":
    main()
