"""Qwen-Image: text-to-image (20B, 2512), image-to-image and inpainting on the same weights, and Qwen-Image-Edit
(single image) / Edit Plus (2509, 2511: several reference images).

One resident pipeline per model; img2img and inpaint run as diffusers' sibling pipelines built on the same
components (``from_pipe``: no second copy of the weights). The system prompt of Qwen's chat template is the
row's ``system_prompt`` when given (reigh-worker sends one per task type).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from source.engine.families.base import Family
from source.engine.params import GenerationParams
from source.errors import InvalidParams
from source.media.load import load_image

# Qwen's template: "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
_SYSTEM_START = "<|im_start|>system\n"
_SYSTEM_END = "<|im_end|>\n<|im_start|>user\n"


def image_text_processor(image_processor, tokenizer):
    """Qwen2-VL's processor with its image and text halves only. Its video half needs torchvision, which a box
    may lack; the edit pipelines never pass videos, so nothing they call is missing."""
    from transformers import Qwen2VLProcessor

    processor = Qwen2VLProcessor.__new__(Qwen2VLProcessor)
    processor.chat_template = None
    processor.image_processor, processor.tokenizer = image_processor, tokenizer
    processor.image_token, processor.video_token = "<|image_pad|>", "<|video_pad|>"
    processor.image_token_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    processor.video_token_id = tokenizer.convert_tokens_to_ids(processor.video_token)

    def save_pretrained(folder, **_: Any) -> None:  # the two halves, in the layout from_pretrained reads
        image_processor.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    processor.save_pretrained = save_pretrained
    return processor


def load_image_text_processor(folder: Path):
    from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

    return image_text_processor(Qwen2VLImageProcessorPil.from_pretrained(folder),
                                AutoTokenizer.from_pretrained(folder))


def _has_torchvision() -> bool:
    return importlib.util.find_spec("torchvision") is not None


class QwenFamily(Family):
    """What every Qwen-Image pipeline shares: 8x VAE with 2x2 patches, true CFG, ``video_length`` images."""

    lora_folder = "qwen"
    is_video = False
    # The parameters only some families read (features.check_supported refuses them elsewhere).
    takes: ClassVar[frozenset[str]] = frozenset({"system_prompt"})

    def spatial_multiple(self, pipe) -> int:
        return pipe.vae_scale_factor * 2

    def frame_count(self, params: GenerationParams) -> int:
        return 1

    def call_kwargs(self, pipe, params: GenerationParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"num_images_per_prompt": params.video_length, "true_cfg_scale": 1.0}
        if params.guidance_scale > 1.0:
            # Qwen's guidance is true CFG against a negative pass; WanGP runs it with a blank negative too.
            kwargs["true_cfg_scale"] = params.guidance_scale
            kwargs["negative_prompt"] = params.negative_prompt or " "
        return kwargs

    def call_context(self, pipe, params: GenerationParams) -> AbstractContextManager:
        return _system_prompt(pipe, params.system_prompt)


@contextmanager
def _system_prompt(pipe, system_prompt: str) -> Iterator[None]:
    """The template with ``system_prompt`` as its system turn, and the index that drops exactly that prefix
    from the text encoder's states (as the pipeline's own index does for its built-in system turn)."""
    if not system_prompt:
        yield
        return
    template, start = pipe.prompt_template_encode, pipe.prompt_template_encode_start_idx
    head, _, rest = template.partition(_SYSTEM_END)
    if not head.startswith(_SYSTEM_START) or not rest:
        raise InvalidParams(f"params.system_prompt: {type(pipe).__name__}'s prompt template has no system turn to "
                            "replace")
    prefix = f"{_SYSTEM_START}{system_prompt}{_SYSTEM_END}"
    # The template is str.format'ed with the prompt: braces in the system prompt are literal text.
    pipe.prompt_template_encode = prefix.replace("{", "{{").replace("}", "}}") + rest
    # The pipeline drops the system turn plus the "<|im_start|>user\n" tokens: count them the same way.
    pipe.prompt_template_encode_start_idx = len(pipe.tokenizer(prefix).input_ids)
    try:
        yield
    finally:
        pipe.prompt_template_encode, pipe.prompt_template_encode_start_idx = template, start


class QwenImageFamily(QwenFamily):
    """Text-to-image; with ``image_start`` image-to-image (``denoising_strength``), with ``image_mask`` too
    inpainting (white = regenerate)."""

    architecture = "qwen_image"
    pipeline_class_name = "QwenImagePipeline"
    takes = QwenFamily.takes | {"image_start", "image_mask", "denoising_strength"}

    def call_kwargs(self, pipe, params: GenerationParams) -> dict[str, Any]:
        kwargs = super().call_kwargs(pipe, params)
        size = (params.width, params.height)
        if params.image_mask is not None and params.image_start is None:
            raise InvalidParams("params.image_mask needs image_start (the image to inpaint)")
        if params.image_start is not None:
            kwargs["image"] = load_image(params.image_start, "image_start", size)
            kwargs["strength"] = params.denoising_strength
        elif params.denoising_strength < 1.0:
            raise InvalidParams(f"params.denoising_strength {params.denoising_strength:g} needs image_start (the "
                                "image to start from)")
        if params.image_mask is not None:
            kwargs["mask_image"] = load_image(params.image_mask, "image_mask", size)
        return kwargs

    def finish(self, images: list[np.ndarray], params: GenerationParams) -> list[np.ndarray]:
        # The VAE's round trip alters every pixel a little; outside the mask the source stays exact.
        if params.image_mask is None:
            return images
        return keep_unmasked(images, params.image_start, params.image_mask)

    def runner(self, pipe, kwargs: dict[str, Any]) -> Callable[..., Any]:
        if "mask_image" in kwargs:
            return sibling(pipe, "QwenImageInpaintPipeline")
        if "image" in kwargs:
            return sibling(pipe, "QwenImageImg2ImgPipeline")
        return pipe


class QwenImageEditFamily(QwenFamily):
    """Qwen-Image-Edit: one source image (``image_start``, else the first of ``image_refs``). With ``image_mask``
    only the white area may change: it is marked green on the source, the convention Qwen-Edit inpainting
    LoRAs are trained on (reigh-worker's composite), and the source's pixels are kept everywhere else."""

    architecture = "qwen_image_edit"
    pipeline_class_name = "QwenImageEditPipeline"
    takes = QwenFamily.takes | {"image_start", "image_refs", "image_mask"}
    max_images: ClassVar[int] = 1

    def images(self, params: GenerationParams) -> list[Image.Image]:
        sources = [params.image_start] if params.image_start is not None else []
        sources += list(params.image_refs)
        if not sources:
            raise InvalidParams(f"{self.architecture} edits images: give image_start or image_refs")
        if len(sources) > self.max_images:
            raise InvalidParams(f"{self.architecture} takes at most {self.max_images} image(s), got {len(sources)} "
                                "(image_start and image_refs together)")
        images = [load_image(source, "image_refs") for source in sources]
        if params.image_mask is not None:
            size = images[0].size
            images[0] = green_composite(images[0], load_image(params.image_mask, "image_mask", size))
        return images

    def call_kwargs(self, pipe, params: GenerationParams) -> dict[str, Any]:
        kwargs = super().call_kwargs(pipe, params)
        images = self.images(params)
        kwargs["image"] = images if self.max_images > 1 else images[0]
        return kwargs

    def runner(self, pipe, kwargs: dict[str, Any]) -> Callable[..., Any]:
        areas = {name: kwargs.pop(key) for key, name in _AREA_KWARGS.items() if key in kwargs}
        return lambda **call: _with_areas(pipe, areas, call)

    def finish(self, images: list[np.ndarray], params: GenerationParams) -> list[np.ndarray]:
        if params.image_mask is None:
            return images
        source = params.image_start if params.image_start is not None else params.image_refs[0]
        return keep_unmasked(images, source, params.image_mask)

    def extra_components(self, folder: Path) -> dict[str, Any]:
        if _has_torchvision() or not (folder / "processor").is_dir():
            return {}
        return {"processor": load_image_text_processor(folder / "processor")}


class QwenImageEditPlusFamily(QwenImageEditFamily):
    """Qwen-Image-Edit Plus (2509, 2511): up to three reference images, each seen whole by the model."""

    architecture = "qwen_image_edit_plus"
    pipeline_class_name = "QwenImageEditPlusPipeline"
    max_images = 3


# Definition pipeline_kwargs → diffusers' module constants: the pixel areas reference images are encoded at
# (VAE) and shown to the vision encoder, 1024² and 384² in the real models. Tiny definitions shrink them so a
# CPU test does not encode 1-megapixel references; real definitions leave them alone.
_AREA_KWARGS = {"reference_vae_area": "VAE_IMAGE_SIZE", "reference_condition_area": "CONDITION_IMAGE_SIZE"}


def _with_areas(pipe, areas: dict[str, int], call: dict[str, Any]):
    module = sys.modules[type(pipe).__module__]
    saved = {name: getattr(module, name) for name in areas if hasattr(module, name)}
    patched = {name: areas[name] for name in saved}
    if "VAE_IMAGE_SIZE" in areas and "VAE_IMAGE_SIZE" not in saved:
        # Qwen-Image-Edit (the first one) sizes its source with calculate_dimensions(1024 * 1024, ratio) inline.
        original, area = module.calculate_dimensions, areas["VAE_IMAGE_SIZE"]
        saved["calculate_dimensions"] = original
        patched["calculate_dimensions"] = lambda target, ratio: original(area if target == 1024 * 1024 else target,
                                                                         ratio)
    for name, value in patched.items():
        setattr(module, name, value)
    try:
        return pipe(**call)
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def sibling(pipe, class_name: str):
    """``class_name`` over ``pipe``'s components (made once, kept on the pipe)."""
    import diffusers

    siblings = pipe.__dict__.setdefault("_siblings", {})
    if class_name not in siblings:
        siblings[class_name] = getattr(diffusers, class_name).from_pipe(pipe)
        siblings[class_name].set_progress_bar_config(disable=True)
    return siblings[class_name]


def _white(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask.convert("L")) > 127


def green_composite(image: Image.Image, mask: Image.Image) -> Image.Image:
    """``image`` painted pure green wherever ``mask`` (same size) is white: how Qwen-Edit inpainting and annotation
    LoRAs are shown the area to change."""
    array = np.asarray(image.convert("RGB")).copy()
    array[_white(mask)] = (0, 255, 0)
    return Image.fromarray(array)


def keep_unmasked(images: list[np.ndarray], source, mask) -> list[np.ndarray]:
    """Each generated image (floats in [0, 1]) with the source's pixels put back wherever the mask is black."""
    height, width = images[0].shape[:2]
    original = np.asarray(load_image(source, "image_start", (width, height)), dtype=np.float32) / 255.0
    where = _white(load_image(mask, "image_mask", (width, height)))[..., None]
    return [np.where(where, image, original) for image in images]
