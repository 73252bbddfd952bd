"""Image super-resolution with Swin2SR (transformers): frames in, frames ``scale`` times larger out.

A model upscales by its own factor (x2 or x4); a requested factor is reached by the fewest model passes
whose product covers it, then a Lanczos fit to the exact size when the product overshoots (x3 = x4 then
Lanczos down). ``method="lanczos"`` skips the model entirely, only when a row asks for it. Large frames are
processed in overlapping tiles so memory stays bounded whatever the input size. Reused by every task that
upscales (``image-upscale``, video enhancement): load once with ``load_upscaler``, call ``upscale``.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
from PIL import Image

from source.errors import InvalidParams, ModelUnavailable
from source.hub import fetch_hub_snapshot

log = structlog.get_logger(__name__)

MAX_SCALE = 8.0
METHODS = ("model", "lanczos")


@dataclass(frozen=True)
class UpscaleModelSpec:
    """Where a super-resolution model's weights come from (a hub repo, or a tiny random-weight build)."""

    factor: int
    repo: str | None = None
    tiny: str | None = None

    def describe(self) -> str:
        return self.repo or f"tiny:{self.tiny}"


# Swin2SR checkpoints of the paper's authors, converted by transformers (hf.co/caidas: model card,
# config.json upscale=2/4, model.safetensors ~48 MB / ~49 MB).
UPSCALE_MODELS: dict[str, UpscaleModelSpec] = {
    "swin2sr_realworld_x4": UpscaleModelSpec(4, repo="caidas/swin2SR-realworld-sr-x4-64-bsrgan-psnr"),
    "swin2sr_classical_x4": UpscaleModelSpec(4, repo="caidas/swin2SR-classical-sr-x4-64"),
    "swin2sr_classical_x2": UpscaleModelSpec(2, repo="caidas/swin2SR-classical-sr-x2-64"),
    "tiny_swin2sr_x2": UpscaleModelSpec(2, tiny="swin2sr_x2"),
}
DEFAULT_UPSCALE_MODEL = "swin2sr_realworld_x4"


def model_spec(name: str) -> UpscaleModelSpec:
    try:
        return UPSCALE_MODELS[name]
    except KeyError:
        raise InvalidParams(f"params.upscale_model: unknown upscaler {name!r}; known: "
                            f"{', '.join(sorted(UPSCALE_MODELS))}") from None


def weights_present(name: str) -> bool:
    """Whether this box can run ``name`` without a download (tiny models are built locally)."""
    spec = model_spec(name)
    if spec.tiny:
        return True
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(spec.repo, "config.json"), str)


def check_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise InvalidParams(f"params.scale_factor must be a number, got {scale!r}")
    if not 1.0 <= scale <= MAX_SCALE:
        raise InvalidParams(f"params.scale_factor must be between 1 and {MAX_SCALE:g}, got {scale:g}")
    return float(scale)


def passes_for(scale: float, factor: int) -> int:
    """Model passes needed so that ``factor ** passes >= scale`` (0 for a scale of 1)."""
    passes = 0
    while factor ** passes < scale - 1e-9:
        passes += 1
    return passes


def target_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def lanczos(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image if image.size == size else image.resize(size, Image.LANCZOS)


def lanczos_upscale(image: Image.Image, scale: float) -> Image.Image:
    """The plain resize, for rows that ask for it instead of the model."""
    return lanczos(image.convert("RGB"), target_size(image.size, check_scale(scale)))


class Upscaler:
    """One loaded Swin2SR model; thread-safe ``upscale``."""

    def __init__(self, name: str, folder: Path, *, tile: int = 256, overlap: int = 16) -> None:
        import torch
        from transformers import Swin2SRForImageSuperResolution

        self.name, self.tile, self.overlap = name, tile, overlap
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.model = Swin2SRForImageSuperResolution.from_pretrained(folder).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"upscaler {name!r} at {folder} could not be loaded: {exc}") from exc
        self.factor = int(self.model.config.upscale)
        self._lock = threading.Lock()

    def upscale(self, image: Image.Image, scale: float, *, method: str = "model") -> Image.Image:
        """``image`` (RGB) resized to ``scale`` times its size: by model passes, or Lanczos when asked."""
        scale = check_scale(scale)
        if method not in METHODS:
            raise InvalidParams(f"params.upscale_method {method!r} is not supported; choose one of "
                                f"{', '.join(METHODS)}")
        size = target_size(image.size, scale)
        image = image.convert("RGB")
        if method == "model":
            for _ in range(passes_for(scale, self.factor)):
                image = Image.fromarray(self._pass(np.asarray(image)))
        return lanczos(image, size)

    def _pass(self, rgb: np.ndarray) -> np.ndarray:
        """One model pass over (H, W, 3) uint8, tile by tile; each tile's border overlap is dropped."""
        import torch

        height, width = rgb.shape[:2]
        f, step = self.factor, self.tile
        out = np.zeros((height * f, width * f, 3), np.uint8)
        with self._lock, torch.inference_mode():
            for top in range(0, height, step):
                for left in range(0, width, step):
                    y0, x0 = max(0, top - self.overlap), max(0, left - self.overlap)
                    y1, x1 = min(height, top + step + self.overlap), min(width, left + step + self.overlap)
                    result = self._model_pass(rgb[y0:y1, x0:x1])
                    result = (result.permute(1, 2, 0) * 255.0).round().byte().cpu().numpy()
                    bottom, right = min(height, top + step), min(width, left + step)
                    out[top * f:bottom * f, left * f:right * f] = result[
                        (top - y0) * f:(bottom - y0) * f, (left - x0) * f:(right - x0) * f]
        return out

    def _model_pass(self, rgb: np.ndarray):
        """One tile through the model, edge-padded to a multiple of its attention window (which Swin2SR's own
        padding gets wrong for sides that are not) and the padding cropped off again."""
        import torch

        height, width = rgb.shape[:2]
        window = self.model.config.window_size
        padded = np.pad(rgb, ((0, -height % window), (0, -width % window), (0, 0)), mode="edge")
        pixels = torch.from_numpy(np.ascontiguousarray(padded)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        result = self.model(pixel_values=pixels).reconstruction[0, :, :height * self.factor, :width * self.factor]
        return result.clamp(0, 1)


def _weights_folder(name: str, spec: UpscaleModelSpec) -> Path:
    if spec.tiny:
        from source.engine import tiny

        return tiny.materialise(spec.tiny)
    return fetch_hub_snapshot(spec.repo, what=f"upscaler {name!r}", allow_patterns=["*.json", "*.safetensors"])


_lock = threading.Lock()
_loaded: dict[str, Upscaler] = {}


def load_upscaler(name: str = DEFAULT_UPSCALE_MODEL) -> Upscaler:
    """The upscaler for a name of UPSCALE_MODELS, loaded once per process (a few tens of MB)."""
    spec = model_spec(name)
    with _lock:
        if name not in _loaded:
            _loaded[name] = Upscaler(name, _weights_folder(name, spec))
            log.info("upscaler_loaded", model=name, source=spec.describe(), factor=_loaded[name].factor)
        return _loaded[name]
