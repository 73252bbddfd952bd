"""Tiny random-weight pipelines for tests and demos, built once and cached on disk as diffusers folders.

Sizes follow diffusers' own ``get_dummy_components`` test configs; tokenizers are built in code so nothing
needs the hub. A tiny pipeline is then loaded through the same ``from_pretrained`` path as real weights.
"""

from __future__ import annotations

import os
import shutil
import string
import tempfile
from collections.abc import Callable
from pathlib import Path

import structlog
import torch

from source.engine.paths import tiny_cache_dir

log = structlog.get_logger(__name__)

# Bump when a builder changes so stale caches are rebuilt instead of silently reused.
BUILDER_VERSION = 3
_WORDS = ["a", "the", "cat", "dog", "monkey", "dance", "beach", "red", "blue", "runs", "on", "in", "of", "with", "city", "night", "sunset", "walking"]
_CHARS = string.ascii_lowercase + string.digits + ".,!?'-"


def _t5_tokenizer():
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{w}", -1.0) for w in _WORDS] + [(c, -3.0) for c in _CHARS]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _bpe_vocab(specials: list[str], suffix: str = "") -> dict[str, int]:
    # No merges: every word falls apart into characters, which is all a random-weight encoder needs.
    vocab = {token: i for i, token in enumerate(specials)}
    for char in _CHARS:
        vocab.setdefault(char, len(vocab))
        if suffix:
            vocab.setdefault(char + suffix, len(vocab))
    return vocab


def _clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab = _bpe_vocab(["<|startoftext|>", "<|pad|>", "<|endoftext|>"], suffix="</w>")
    return CLIPTokenizer(vocab=vocab, merges=[], pad_token="<|pad|>", model_max_length=77)


def _llama_tokenizer():
    from transformers import LlamaTokenizer

    vocab = _bpe_vocab(["<s>", "<pad>", "</s>", "<unk>", "▁"])
    return LlamaTokenizer(vocab=vocab, merges=[], pad_token="<pad>", model_max_length=256)


def _umt5(d_model: int = 32):
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(vocab_size=128, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4)
    return UMT5EncoderModel(config)


def _t5(d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=128, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4)
    return T5EncoderModel(config)


def _clip_text(hidden_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=hidden_size, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=160, hidden_act="gelu", projection_dim=32,
    )
    return CLIPTextModel(config)


def _wan_vae(*, real_layout: bool = False):
    from diffusers import AutoencoderKLWan

    # real_layout: the real Wan 2.1 VAE's block structure (3 resnets per decoder stage, channel multipliers
    # 1,2,4,4), which diffusers' single-file converter assumes; the default is smaller still.
    shape = dict(base_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=2) if real_layout else dict(
        base_dim=3, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    vae = AutoencoderKLWan(z_dim=16, temperal_downsample=[False, True, True], **shape)
    # Random init decodes every latent to nearly the same grey (a spread of ~0.1); a steeper, centred
    # output layer gives pixels the full range, so tests can see what a seed, a guide or a LoRA changes.
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(10.0)
        vae.decoder.conv_out.bias.zero_()
    return vae


def _wan_transformer(cls_name: str = "WanTransformer3DModel", *, heads: int = 2, head_dim: int = 12,
                     layers: int = 2, ffn: int = 32, **extra):
    import diffusers

    cls = getattr(diffusers, cls_name)
    return cls(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=ffn, num_layers=layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, **{"in_channels": 16, **extra},
    )


def _wan_common(*, real_vae_layout: bool = False) -> dict:
    from diffusers import UniPCMultistepScheduler

    torch.manual_seed(0)
    vae = _wan_vae(real_layout=real_vae_layout)
    torch.manual_seed(0)
    text_encoder = _umt5()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return {"vae": vae, "text_encoder": text_encoder, "tokenizer": _t5_tokenizer(), "scheduler": scheduler}


def _seeded(seed: int, make: Callable[[], object]):
    torch.manual_seed(seed)
    return make()


def build_wan_t2v():
    from diffusers import WanPipeline

    return WanPipeline(transformer=_seeded(0, _wan_transformer), **_wan_common())


def build_wan_t2v_2_2():
    from diffusers import WanPipeline

    return WanPipeline(
        transformer=_seeded(0, _wan_transformer), transformer_2=_seeded(1, _wan_transformer),
        boundary_ratio=0.875, **_wan_common(),
    )


def build_wan_t2v_bench():
    """Larger than the test model so one CPU generation takes seconds (engine-overhead benchmark)."""
    from diffusers import WanPipeline

    big = lambda: _wan_transformer(heads=4, head_dim=32, layers=4, ffn=256)  # noqa: E731
    return WanPipeline(transformer=_seeded(0, big), **_wan_common())


def build_wan_i2v():
    from diffusers import WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    vision = CLIPVisionConfig(hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, intermediate_size=16, patch_size=1)
    return WanImageToVideoPipeline(
        transformer=_seeded(0, lambda: _wan_transformer(in_channels=36, image_dim=4)),
        image_encoder=_seeded(0, lambda: CLIPVisionModelWithProjection(vision)),
        image_processor=CLIPImageProcessor(crop_size=32, size=32),
        **_wan_common(),
    )


def build_wan_i2v_2_2():
    from diffusers import WanImageToVideoPipeline

    expert = lambda: _wan_transformer(in_channels=36)  # noqa: E731
    return WanImageToVideoPipeline(
        transformer=_seeded(0, expert), transformer_2=_seeded(1, expert), boundary_ratio=0.875,
        image_encoder=None, image_processor=None, **_wan_common(),
    )


def build_wan_vace():
    from diffusers import WanVACEPipeline

    vace = lambda: _wan_transformer(  # noqa: E731
        "WanVACETransformer3DModel", layers=3, vace_layers=[0, 2], vace_in_channels=96
    )
    return WanVACEPipeline(transformer=_seeded(0, vace), **_wan_common())


def build_wan_vace_2_2():
    """Wan 2.2 two experts sharing one VACE module, as WanGP builds its VACE 2.2 models (and the cocktail).
    Its VAE has the real block layout so the same weights can be written as original single files."""
    from diffusers import WanVACEPipeline

    vace = lambda: _wan_transformer(  # noqa: E731
        "WanVACETransformer3DModel", layers=3, vace_layers=[0, 2], vace_in_channels=96
    )
    high, low = _seeded(0, vace), _seeded(1, vace)
    shared = {k: v for k, v in high.state_dict().items() if k.startswith("vace_")}
    low.load_state_dict(shared, strict=False)
    return WanVACEPipeline(transformer=high, transformer_2=low, boundary_ratio=0.875,
                           **_wan_common(real_vae_layout=True))


def _flux_components() -> dict:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    transformer = _seeded(0, lambda: FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
        guidance_embeds=True,
    ))
    vae = _seeded(0, lambda: AutoencoderKL(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
        latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
        shift_factor=0.0609, scaling_factor=1.5035,
    ))
    return {
        "transformer": transformer, "vae": vae, "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": _seeded(0, lambda: _clip_text(32)), "tokenizer": _clip_tokenizer(),
        "text_encoder_2": _seeded(0, _t5), "tokenizer_2": _t5_tokenizer(),
    }


def build_flux():
    from diffusers import FluxPipeline

    return FluxPipeline(**_flux_components())


def build_flux_kontext():
    from diffusers import FluxKontextPipeline

    return FluxKontextPipeline(**_flux_components())


def build_hunyuan():
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import LlamaConfig, LlamaModel

    transformer = _seeded(0, lambda: HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
    ))
    vae = _seeded(0, lambda: AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
        temporal_compression_ratio=4, mid_block_add_attention=True,
    ))
    llama = LlamaConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=16, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=160, hidden_act="gelu",
    )
    return HunyuanVideoPipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder=_seeded(0, lambda: LlamaModel(llama)), tokenizer=_llama_tokenizer(),
        text_encoder_2=_seeded(0, lambda: _clip_text(8)), tokenizer_2=_clip_tokenizer(),
    )


def build_ltxv():
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline
    from diffusers import LTXVideoTransformer3DModel as LTXTransformer

    transformer = _seeded(0, lambda: LTXTransformer(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=8,
        cross_attention_dim=32, num_layers=1, caption_channels=32,
    ))
    scaling = (True, True, False, False)
    vae = _seeded(0, lambda: AutoencoderKLLTXVideo(
        latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=scaling, decoder_spatio_temporal_scaling=scaling,
        decoder_inject_noise=(False,) * 5, upsample_residual=(False,) * 4, upsample_factor=(1,) * 4,
        timestep_conditioning=False, patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False,
    ))
    return LTXPipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=_seeded(0, _t5), tokenizer=_t5_tokenizer(),
    )


def _gemma_tokenizer():
    from transformers import GemmaTokenizer

    vocab = _bpe_vocab(["<pad>", "<eos>", "<bos>", "<unk>", "▁"])
    return GemmaTokenizer(vocab=vocab, merges=[], pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                          unk_token="<unk>", model_max_length=64)


def build_ltx2():
    """LTX-2 at diffusers' test sizes (tests/pipelines/ltx2/testing_utils.py), with a local tiny Gemma 3
    instead of the hub's: video and audio streams, audio VAE and vocoder, all random."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2Pipeline,
    )
    from diffusers import LTX2VideoTransformer3DModel as LTX2Transformer
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    layers, hidden = 2, 32  # the connectors' width (4 heads x 8) must equal the text encoder's
    config = Gemma3Config(
        text_config={"vocab_size": 128, "hidden_size": hidden, "intermediate_size": 32, "num_hidden_layers": layers,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8, "sliding_window": 16,
                     "max_position_embeddings": 256},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 28, "patch_size": 14},
        mm_tokens_per_image=4)
    text_encoder = _seeded(0, lambda: Gemma3ForConditionalGeneration(config))
    transformer = _seeded(0, lambda: LTX2Transformer(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
        audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads",
        caption_channels=hidden, rope_double_precision=False, rope_type="split"))
    connectors = _seeded(0, lambda: LTX2TextConnectors(
        caption_channels=hidden, text_proj_in_factor=layers + 1, video_connector_num_attention_heads=4,
        video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_theta=10000.0,
        rope_double_precision=False, causal_temporal_positioning=False, rope_type="split"))
    vae = _seeded(0, lambda: AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), decoder_block_out_channels=(8,),
        layers_per_block=(1,), decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(True,),
        decoder_spatio_temporal_scaling=(True,), decoder_inject_noise=(False, False), downsample_type=("spatial",),
        upsample_residual=(False,), upsample_factor=(1,), timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False))
    audio_vae = _seeded(0, lambda: AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=8))
    vocoder = _seeded(0, lambda: LTX2Vocoder(
        in_channels=2 * 8, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[4, 4], upsample_factors=[2, 2],
        resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]], leaky_relu_negative_slope=0.1,
        output_sampling_rate=16000))
    return LTX2Pipeline(transformer=transformer, vae=vae, audio_vae=audio_vae, scheduler=FlowMatchEulerDiscreteScheduler(),
                        text_encoder=text_encoder, tokenizer=_gemma_tokenizer(), connectors=connectors, vocoder=vocoder)
_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
# Enough of Qwen's chat template for Z-Image's apply_chat_template (one user turn, then the assistant's).
_QWEN_CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                       "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _qwen_tokenizer():
    """Qwen2's byte-level BPE with no merges (every byte one token) and the chat/vision special tokens."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    vocab = {char: i for i, char in enumerate(sorted(ByteLevel.alphabet()))}
    for token in _QWEN_SPECIALS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               model_max_length=4096)
    tokenizer.add_special_tokens({"additional_special_tokens": _QWEN_SPECIALS})
    tokenizer.chat_template = _QWEN_CHAT_TEMPLATE
    return tokenizer


def _qwen_vl(tokenizer):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in _QWEN_SPECIALS}
    text = {"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 2, "vocab_size": len(tokenizer), "rope_theta": 1000000.0,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "bos_token_id": None, "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"]}
    vision = {"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16}
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, hidden_size=16, vocab_size=len(tokenizer),
        bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
    )
    return _seeded(0, lambda: Qwen2_5_VLForConditionalGeneration(config))


def _qwen_components(*, edit: bool = False) -> dict:
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel

    from source.engine.families.qwen import image_text_processor

    tokenizer = _qwen_tokenizer()
    transformer = _seeded(0, lambda: QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=3,
        joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4),
    ))
    vae = _seeded(0, lambda: AutoencoderKLQwenImage(
        base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1, temperal_downsample=[False, True],
        latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
    ))
    components = {"transformer": transformer, "vae": vae, "text_encoder": _qwen_vl(tokenizer),
                  "tokenizer": tokenizer, "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0)}
    if edit:
        from transformers import Qwen2VLImageProcessorPil

        # the smallest vision grid (2x2 merged patches), so a reference costs the encoder a few tokens
        images = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56)
        components["processor"] = image_text_processor(images, tokenizer)
    return components


def build_qwen_image():
    from diffusers import QwenImagePipeline

    return QwenImagePipeline(**_qwen_components())


def build_qwen_image_edit():
    from diffusers import QwenImageEditPipeline

    return QwenImageEditPipeline(**_qwen_components(edit=True))


def build_qwen_image_edit_plus():
    from diffusers import QwenImageEditPlusPipeline

    return QwenImageEditPlusPipeline(**_qwen_components(edit=True))


def build_z_image():
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        ZImagePipeline,
        ZImageTransformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = _qwen_tokenizer()
    transformer = _seeded(0, lambda: ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
        axes_dims=[8, 4, 4], axes_lens=[256, 32, 32],
    ))
    vae = _seeded(0, lambda: AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 64], layers_per_block=1,
        latent_channels=16, norm_num_groups=32, sample_size=32, scaling_factor=0.3611, shift_factor=0.1159,
    ))
    text_encoder = _seeded(0, lambda: Qwen3Model(Qwen3Config(
        hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        vocab_size=len(tokenizer), max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
    )))
    return ZImagePipeline(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                          scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))


class _TransformersBundle:
    """A transformers model and its image processor saved side by side, as hub repos hold them."""

    def __init__(self, model, processor) -> None:
        self.model, self.processor = model, processor

    def save_pretrained(self, path: Path) -> None:
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)


def build_depth_anything():
    """Depth Anything (DINOv2 backbone + DPT head) at a few hundred thousand weights."""
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    backbone = Dinov2Config(image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=64, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[16, 16, 32, 32],
                                 fusion_hidden_size=16, head_hidden_size=16, depth_estimation_type="relative")
    processor = DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    return _TransformersBundle(_seeded(0, lambda: DepthAnythingForDepthEstimation(config)), processor)


def build_swin2sr_x2():
    """Swin2SR x2 (transformers) at a few thousand weights: the real upscaler's classes, random weights."""
    from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

    config = Swin2SRConfig(image_size=32, embed_dim=16, depths=[1], num_heads=[2], window_size=4, upscale=2,
                           upsampler="pixelshuffledirect")
    return _seeded(0, lambda: Swin2SRForImageSuperResolution(config))


BUILDERS: dict[str, Callable[[], object]] = {
    "wan_t2v": build_wan_t2v,
    "wan_t2v_2_2": build_wan_t2v_2_2,
    "wan_t2v_bench": build_wan_t2v_bench,
    "wan_i2v": build_wan_i2v,
    "wan_i2v_2_2": build_wan_i2v_2_2,
    "wan_vace": build_wan_vace,
    "wan_vace_2_2": build_wan_vace_2_2,
    "flux": build_flux,
    "flux_kontext": build_flux_kontext,
    "hunyuan": build_hunyuan,
    "ltxv": build_ltxv,
    "ltx2": build_ltx2,
    "qwen_image": build_qwen_image,
    "qwen_image_edit": build_qwen_image_edit,
    "qwen_image_edit_plus": build_qwen_image_edit_plus,
    "z_image": build_z_image,
    "depth_anything": build_depth_anything,
    "swin2sr_x2": build_swin2sr_x2,
}
# The file whose presence marks a complete folder: diffusers pipelines have model_index.json.
_MARKERS = {"depth_anything": "preprocessor_config.json", "swin2sr_x2": "model.safetensors"}


def materialise(kind: str, cache_dir: Path | None = None) -> Path:
    """Return the folder of tiny pipeline ``kind``, building it first if no process has yet.

    Concurrency: each builder writes into its own temp folder and renames it into place; the rename is
    atomic, so a reader sees either no folder or a complete one, and a losing racer just drops its copy.
    """
    if kind not in BUILDERS:
        raise KeyError(f"unknown tiny model {kind!r}; known: {', '.join(sorted(BUILDERS))}")
    root = Path(cache_dir or tiny_cache_dir())
    final = root / f"{kind}-v{BUILDER_VERSION}"
    marker = final / _MARKERS.get(kind, "model_index.json")
    if marker.is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=root))
    try:
        # Fork the RNG so building never perturbs the caller's global torch seed.
        with torch.random.fork_rng(devices=[]):
            pipe = BUILDERS[kind]()
        pipe.save_pretrained(tmp)
        try:
            os.rename(tmp, final)
            log.info("tiny_model_built", kind=kind, path=str(final))
        except OSError:
            if not marker.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
