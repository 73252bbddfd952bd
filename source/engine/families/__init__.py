"""One module per model family; ``family_for(architecture)`` is the single lookup table."""

from __future__ import annotations

from source.engine.families.base import Family
from source.engine.families.flux import FluxFamily, FluxKontextFamily
from source.engine.families.hunyuan import HunyuanFamily
from source.engine.families.ltx import LTXFamily
from source.engine.families.ltx2 import LTX2Family
from source.engine.families.qwen import QwenImageEditFamily, QwenImageEditPlusFamily, QwenImageFamily
from source.engine.families.wan import WanI2VFamily, WanT2VFamily, WanVACEFamily
from source.engine.families.z_image import ZImageFamily
from source.errors import InvalidParams

FAMILIES: dict[str, Family] = {
    family.architecture: family
    for family in (
        WanT2VFamily(), WanI2VFamily(), WanVACEFamily(), FluxFamily(), FluxKontextFamily(), HunyuanFamily(),
        LTXFamily(), LTX2Family(), QwenImageFamily(), QwenImageEditFamily(), QwenImageEditPlusFamily(),
        ZImageFamily(),
    )
}


def family_for(architecture: str) -> Family:
    try:
        return FAMILIES[architecture]
    except KeyError:
        raise InvalidParams(
            f"unknown architecture {architecture!r}; known: {', '.join(sorted(FAMILIES))}"
        ) from None
