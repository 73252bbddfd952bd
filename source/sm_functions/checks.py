"""Up-front checks orchestrators share, each failing with InvalidParams that names the offending key."""

from __future__ import annotations

from source.engine.model_defs import load_model_def
from source.errors import InvalidParams
from source.task_conversion import normalise_resolution

# Wan's VAE packs 4 frames per latent after the first, and 8 pixels per latent times a patch of 2.
FRAME_QUANTUM = 4
SPATIAL_MULTIPLE = 16


def check_frames(name: str, value: int) -> int:
    if value < FRAME_QUANTUM + 1 or (value - 1) % FRAME_QUANTUM:
        lower = max(FRAME_QUANTUM + 1, (value - 1) // FRAME_QUANTUM * FRAME_QUANTUM + 1)
        raise InvalidParams(f"{name} is {value}; frame counts must be {FRAME_QUANTUM}n+1 and at least "
                            f"{FRAME_QUANTUM + 1} (e.g. {lower} or {lower + FRAME_QUANTUM})")
    return value


def check_resolution(name: str, value: object, multiple: int = SPATIAL_MULTIPLE) -> tuple[int, int]:
    """``"WxH"`` or [w, h] → (w, h), both multiples of ``multiple``."""
    try:
        text = normalise_resolution(value)
    except InvalidParams:
        raise InvalidParams(f"{name} must look like 'WIDTHxHEIGHT', got {value!r}") from None
    width, height = (int(part) for part in text.split("x"))
    if width % multiple or height % multiple:
        raise InvalidParams(f"{name} {text}: width and height must be multiples of {multiple} (e.g. "
                            f"{width // multiple * multiple or multiple}x{height // multiple * multiple or multiple})")
    return width, height


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
