"""Up-front checks orchestrators share: values WanGP would adjust are adjusted (and recorded), anything else
fails with InvalidParams that names the offending key."""

from __future__ import annotations

from typing import Any

import structlog

from source.engine.model_defs import load_model_def
from source.engine.params import FRAME_STEP, nearest_valid, valid_frame_count
from source.errors import InvalidParams
from source.generation.conversion import normalise_resolution

log = structlog.get_logger(__name__)

# Wan's VAE: 8 pixels per latent times a patch of 2 (its frames: params.FRAME_STEP).
SPATIAL_MULTIPLE = 16


def nearest_frame_count(name: str, value: int, adjusted: dict[str, Any] | None = None) -> int:
    """``value`` rounded to the nearest 4n+1 (at least 5), as WanGP adjusts a requested length; a change is
    logged as a warning and recorded in ``adjusted`` (the row's result shows it)."""
    if value < 1:
        raise InvalidParams(f"{name} is {value}; send a frame count of at least {FRAME_STEP + 1} (e.g. 17)")
    used = valid_frame_count(value, minimum=FRAME_STEP + 1)
    _record(name, value, used, adjusted)
    return used


def check_resolution(name: str, value: object, multiple: int = SPATIAL_MULTIPLE,
                     adjusted: dict[str, Any] | None = None) -> tuple[int, int]:
    """``"WxH"`` or [w, h] → (w, h), each rounded to the nearest multiple of ``multiple`` (as WanGP snaps a
    size to the model's grid); a change is logged and recorded in ``adjusted``."""
    try:
        text = normalise_resolution(value)
    except InvalidParams:
        raise InvalidParams(f"{name} must look like 'WIDTHxHEIGHT', got {value!r}") from None
    width, height = (int(part) for part in text.split("x"))
    used = (nearest_valid(width, multiple), nearest_valid(height, multiple))
    _record(name, text, f"{used[0]}x{used[1]}", adjusted)
    return used


def _record(name: str, requested: Any, used: Any, adjusted: dict[str, Any] | None) -> None:
    if requested == used:
        return
    log.warning("value_adjusted", param=name, requested=requested, used=used,
                reason="rounded to the nearest value the model supports")
    if adjusted is not None:
        adjusted[name.removeprefix("params.")] = {"requested": requested, "used": used}


def check_model(name: str, model: str, architectures: tuple[str, ...], purpose: str) -> str:
    """The model definition exists and is of one of ``architectures``."""
    try:
        definition = load_model_def(model)
    except InvalidParams as exc:
        raise InvalidParams(f"{name}: {exc}") from None
    if definition.architecture not in architectures:
        raise InvalidParams(f"{name} {model!r} is a {definition.architecture} model; {purpose} needs "
                            f"{' or '.join(architectures)}")
    return model
