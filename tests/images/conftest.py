"""Rows as Reigh's row builders make them (supabase/functions/create-task/resolvers/*.ts), with the model
swapped for its tiny counterpart and URLs for local files; small distinct images to edit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

SIZE = 32


@pytest.fixture
def pictures(tmp_path: Path) -> dict[str, str]:
    """A noisy source, a second reference, and a mask whose centre square is white (= change)."""
    rng = np.random.default_rng(11)
    paths = {}
    for name, tint in (("source", 0), ("reference", 2)):
        image = rng.integers(0, 90, (SIZE, SIZE, 3), dtype=np.uint8)
        image[..., tint] += 150
        paths[name] = str(tmp_path / f"{name}.png")
        Image.fromarray(image).save(paths[name])
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:24, 8:24] = 255
    paths["mask"] = str(tmp_path / "mask.png")
    Image.fromarray(mask).save(paths["mask"])
    return paths


def image_generation_row(model: str, prompt: str = "a lighthouse at dusk", **extra: Any) -> dict[str, Any]:
    """imageGeneration.ts buildTaskParams (qwen_image, qwen_image_2512, qwen_image_style, z_image_turbo)."""
    return {"task_id": "t-1", "model": model, "prompt": prompt, "resolution": f"{SIZE}x{SIZE}", "seed": 7,
            "steps": 2, "add_in_position": False, **extra}


def magic_edit_row(image: str, **extra: Any) -> dict[str, Any]:
    """magicEdit.ts buildMagicEditTaskParams (task type qwen_image_edit)."""
    return {"seed": 5, "image": image, "prompt": "make it night", "output_format": "jpeg",
            "qwen_edit_model": "qwen-edit-2511", "enable_sync_mode": False, "max_wait_seconds": 300,
            "enable_base64_output": False, "resolution": f"{SIZE}x{SIZE}", "add_in_position": False,
            "shot_id": "shot-1", **extra}


def masked_edit_row(image: str, mask: str, **extra: Any) -> dict[str, Any]:
    """maskedEdit.ts buildMaskedEditParams (image_inpaint / annotated_image_edit)."""
    return {"image_url": image, "mask_url": mask, "prompt": "a red balloon", "num_generations": 1,
            "generation_id": "g-1", "based_on": "g-1", "parent_generation_id": "g-1", **extra}


def z_image_i2i_row(image: str, **extra: Any) -> dict[str, Any]:
    """zImageTurboI2I.ts buildTaskParams."""
    return {"image_url": image, "prompt": "", "strength": 0.6, "enable_prompt_expansion": False, "num_images": 1,
            "image_size": "auto", "num_inference_steps": 2, "output_format": "png", "enable_safety_checker": True,
            "add_in_position": False, "seed": 9, "acceleration": "high", **extra}


def upscale_row(image: str, **extra: Any) -> dict[str, Any]:
    """imageUpscale.ts buildImageUpscaleTaskParams."""
    return {"image": image, "scale_factor": 2, "noise_scale": 0.1, "output_format": "jpeg", **extra}
