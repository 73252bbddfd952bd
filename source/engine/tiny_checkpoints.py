"""Tiny single-file checkpoints in the original Wan/WanGP key layout, for tests and demos of ``weights.files``.

The tensors are those of a tiny diffusers pipeline (source/engine/tiny.py) renamed to the names the original Wan
code gives them (``blocks.N.self_attn.q``, ``head.modulation``, ``vace_blocks.N.before_proj``, the VAE's
``decoder.upsamples.N.residual``, the T5 encoder's ``blocks.N.attn.q``), split the way WanGP ships them: one file
per expert, the VACE blocks in a separate module file, the VAE and the text encoder on their own.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from source.engine import tiny

# diffusers → original Wan transformer names, applied in order to each key (inverse of diffusers' converter).
_TRANSFORMER_RENAMES = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"),
    (".attn1.", ".self_attn."),
    (".attn2.", ".cross_attn."),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".add_k_proj.", ".k_img."),
    (".add_v_proj.", ".v_img."),
    (".norm_added_k.", ".norm_k_img."),
    (".ffn.net.0.proj.", ".ffn.0."),
    (".ffn.net.2.", ".ffn.2."),
    (".norm2.", ".norm3."),  # the cross-attention norm: norm3 in the original block, norm2 in diffusers
    (".scale_shift_table", ".modulation"),
]


def wan_transformer_to_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, tensor in state_dict.items():
        if key == "scale_shift_table":
            new = "head.modulation"
        elif key.startswith("proj_out."):
            new = key.replace("proj_out.", "head.head.", 1)
        else:
            new = key
            for old, replacement in _TRANSFORMER_RENAMES:
                new = new.replace(old, replacement)
            if new.startswith("vace_blocks."):
                new = new.replace(".proj_in.", ".before_proj.").replace(".proj_out.", ".after_proj.")
        out[new] = tensor.contiguous()
    return out


_RESNET = {"norm1.gamma": "residual.0.gamma", "conv1": "residual.2", "norm2.gamma": "residual.3.gamma",
           "conv2": "residual.6", "conv_shortcut": "shortcut"}


def _resnet_part(rest: str) -> str:
    for diffusers_name, original in _RESNET.items():
        if rest.startswith(diffusers_name):
            return original + rest[len(diffusers_name):]
    return rest


def wan_vae_to_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of diffusers' ``convert_wan_vae_to_diffusers`` (the real VAE's 3 resnets per decoder stage)."""
    out = {}
    for key, tensor in state_dict.items():
        new = {"quant_conv.weight": "conv1.weight", "quant_conv.bias": "conv1.bias",
               "post_quant_conv.weight": "conv2.weight", "post_quant_conv.bias": "conv2.bias"}.get(key)
        if new is None:
            part, _, rest = key.partition(".")  # encoder / decoder
            new = f"{part}.{rest}"
            if rest.startswith("conv_in."):
                new = f"{part}.conv1.{rest[len('conv_in.'):]}"
            elif rest.startswith("norm_out."):
                new = f"{part}.head.0.{rest[len('norm_out.'):]}"
            elif rest.startswith("conv_out."):
                new = f"{part}.head.2.{rest[len('conv_out.'):]}"
            elif match := re.match(r"mid_block\.resnets\.(\d)\.(.*)", rest):
                new = f"{part}.middle.{2 * int(match[1])}.{_resnet_part(match[2])}"
            elif match := re.match(r"mid_block\.attentions\.0\.(.*)", rest):
                new = f"{part}.middle.1.{match[1]}"
            elif match := re.match(r"down_blocks\.(\d+)\.(.*)", rest):
                new = f"{part}.downsamples.{match[1]}.{_resnet_part(match[2])}"
            elif match := re.match(r"up_blocks\.(\d)\.resnets\.(\d)\.(.*)", rest):
                new = f"{part}.upsamples.{4 * int(match[1]) + int(match[2])}.{_resnet_part(match[3])}"
            elif match := re.match(r"up_blocks\.(\d)\.upsamplers\.0\.(.*)", rest):
                new = f"{part}.upsamples.{4 * int(match[1]) + 3}.{match[2]}"
        out[new] = tensor.contiguous()
    return out


def umt5_to_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' UMT5 encoder → the original Wan T5 names (what WanGP's umt5-xxl file holds)."""
    rules = [
        (r"^shared\.weight$", "token_embedding.weight"),
        (r"^encoder\.final_layer_norm\.weight$", "norm.weight"),
        (r"^encoder\.block\.(\d+)\.layer\.0\.layer_norm\.weight$", r"blocks.\1.norm1.weight"),
        (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.([qkvo])\.weight$", r"blocks.\1.attn.\2.weight"),
        (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.weight$",
         r"blocks.\1.pos_embedding.embedding.weight"),
        (r"^encoder\.block\.(\d+)\.layer\.1\.layer_norm\.weight$", r"blocks.\1.norm2.weight"),
        (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.weight$", r"blocks.\1.ffn.gate.0.weight"),
        (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.weight$", r"blocks.\1.ffn.fc1.weight"),
        (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.weight$", r"blocks.\1.ffn.fc2.weight"),
    ]
    out = {}
    for key, tensor in state_dict.items():
        if key == "encoder.embed_tokens.weight":
            continue  # tied to shared.weight
        for pattern, target in rules:
            if re.match(pattern, key):
                out[re.sub(pattern, target, key)] = tensor.contiguous()
                break
        else:
            raise KeyError(f"no original name for UMT5 tensor {key!r}")
    return out


def ltx_transformer_to_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' LTX-Video transformer → the names in Lightricks' single files (``model.diffusion_model.``...)."""
    renames = [("proj_in", "patchify_proj"), ("time_embed", "adaln_single"), ("norm_q", "q_norm"),
               ("norm_k", "k_norm")]
    out = {}
    for key, tensor in state_dict.items():
        for old, new in renames:
            key = key.replace(old, new)
        out[f"model.diffusion_model.{key}"] = tensor.contiguous()
    return out


def write_ltxv(path: Path) -> Path:
    """The tiny LTX-Video transformer as one Lightricks-style file (which also carries ``vae.`` tensors)."""
    from diffusers import LTXVideoTransformer3DModel
    from safetensors.torch import save_file

    transformer = LTXVideoTransformer3DModel.from_pretrained(tiny.materialise("ltxv") / "transformer")
    tensors = ltx_transformer_to_original(transformer.state_dict())
    tensors["vae.per_channel_statistics.mean-of-means"] = torch.zeros(8)  # ignored by the transformer loader
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


# File names as WanGP spells them, with a tiny_ prefix so they can never be mistaken for real weights.
WAN_VACE_2_2_FILES = {
    "high": "tiny_wan2.2_text2video_high_mbf16.safetensors",
    "low": "tiny_wan2.2_text2video_low_mbf16.safetensors",
    "vace": "tiny_wan2.1_Vace_module_mbf16.safetensors",
    "vae": "tiny_Wan2.1_VAE.safetensors",
    "text_encoder": "umt5-xxl/tiny_models_t5_umt5-xxl-enc-bf16.safetensors",
}


def write_wan_vace_2_2(folder: Path) -> dict[str, Path]:
    """Write the tiny ``wan_vace_2_2`` pipeline's weights as WanGP-style original-layout files under ``folder``."""
    from diffusers import WanVACEPipeline
    from safetensors.torch import save_file

    pipe = WanVACEPipeline.from_pretrained(tiny.materialise("wan_vace_2_2"), dtype=torch.float32)
    high = wan_transformer_to_original(pipe.transformer.state_dict())
    low = wan_transformer_to_original(pipe.transformer_2.state_dict())
    tensors = {
        "high": {k: v for k, v in high.items() if not k.startswith("vace_")},
        "low": {k: v for k, v in low.items() if not k.startswith("vace_")},
        "vace": {k: v for k, v in high.items() if k.startswith("vace_")},
        "vae": wan_vae_to_original(pipe.vae.state_dict()),
        "text_encoder": umt5_to_original(pipe.text_encoder.state_dict()),
    }
    paths = {}
    for part, name in WAN_VACE_2_2_FILES.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors[part], str(path))
        paths[part] = path
    return paths
