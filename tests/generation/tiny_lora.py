"""Tiny random LoRAs for the tiny Wan transformers, built with peft and saved in diffusers' format."""

from __future__ import annotations

from pathlib import Path

import torch


def make_tiny_wan_lora(folder: Path, name: str, *, kind: str = "wan_t2v", seed: int = 0, rank: int = 4,
                       strength: float = 1.0) -> Path:
    """A LoRA over the attention projections of the tiny ``kind`` transformer (random A and B; ``strength``
    scales B, and so the whole update)."""
    from diffusers import WanPipeline, WanTransformer3DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from source.engine.tiny import materialise

    transformer = WanTransformer3DModel.from_pretrained(materialise(kind) / "transformer")
    torch.manual_seed(seed)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    state = {key: value * strength if "lora_B" in key else value
             for key, value in get_peft_model_state_dict(transformer).items()}
    folder.mkdir(parents=True, exist_ok=True)
    WanPipeline.save_lora_weights(folder, transformer_lora_layers=state, weight_name=f"{name}.safetensors")
    return folder / f"{name}.safetensors"
