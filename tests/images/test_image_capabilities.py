"""A worker advertises the image task types only where their models fit its GPU, and claims Reigh's rows that
name a model by Reigh's name ("qwen-image", "z-image") when it may load that definition; a real worker.py
process runs a batch of Reigh-shaped image rows end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from source.db.models import NewTask, TaskStatus
from source.worker.capabilities import resolve_capabilities
from tests.helpers import run_worker
from tests.images.conftest import image_generation_row, masked_edit_row, upscale_row


def _claim_all(store, capabilities) -> list[str]:
    taken = []
    while task := store.claim_next_task("box", lease_seconds=60, capabilities=capabilities):
        taken.append(task.task_type)
    return taken


def test_a_32_gib_box_claims_z_image_rows_but_leaves_qwen_image_rows_queued(sqlite_store):
    capabilities = resolve_capabilities(None, None, 32.0)
    assert "z_image" in capabilities.models and "z-image" in capabilities.models
    assert "qwen_image" not in capabilities.models and "qwen-image" not in capabilities.models
    assert "image-upscale" in capabilities.modelless_task_types  # needs no generation model
    for task_type, model in (("qwen_image", "qwen-image"), ("z_image_turbo", "z-image"), ("image_inpaint", None)):
        sqlite_store.add_task(NewTask(task_type, {"prompt": "x", **({"model": model} if model else {})}))
    sqlite_store.add_task(NewTask("image-upscale", upscale_row("a.png")))
    assert sorted(_claim_all(sqlite_store, capabilities)) == ["image-upscale", "z_image_turbo"]
    # a box with the memory for Qwen-Image takes the rest
    assert sorted(_claim_all(sqlite_store, resolve_capabilities(None, None, 96.0))) == ["image_inpaint", "qwen_image"]


@pytest.mark.slow
def test_worker_process_completes_reigh_image_rows(tmp_path, pictures):
    from source.db.sqlite import SqliteTaskStore

    db = tmp_path / "tasks.db"
    store = SqliteTaskStore(db)
    store.migrate()
    ids = {
        "qwen_image": store.add_task(NewTask("qwen_image", image_generation_row("tiny_qwen_image",
                                                                                 output_format="webp"))),
        "image_inpaint": store.add_task(NewTask("image_inpaint", masked_edit_row(
            pictures["source"], pictures["mask"], model="tiny_qwen_image_edit"))),
        "image-upscale": store.add_task(NewTask("image-upscale", upscale_row(pictures["source"],
                                                                             upscale_model="tiny_swin2sr_x2"))),
    }
    done = run_worker(db, tmp_path / "out", "--once", "--input-roots", str(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {name: store.get_task(task_id) for name, task_id in ids.items()}
    assert all(row.status is TaskStatus.COMPLETE for row in rows.values()), {
        n: r.error_message for n, r in rows.items()}
    assert Image.open(rows["qwen_image"].output_location).format == "WEBP"
    assert Image.open(rows["image-upscale"].output_location).size == (64, 64)
    assert Path(rows["image_inpaint"].output_location).suffix == ".png"
