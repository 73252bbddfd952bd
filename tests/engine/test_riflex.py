"""RIFLEx on diffusers' Wan rotary embedding: exactly WanGP's frequency change, nothing else, for the call."""

from __future__ import annotations

import torch
from diffusers.hooks import HookRegistry
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

from source.engine.riflex import RiflexHook


def wangp_time_rope(dim: int, frames: int, k: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """WanGP's get_1d_rotary_pos_embed_riflex (models/wan/modules/posemb_layers.py) for the time axis."""
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim))
    freqs[k - 1] = 0.9 * 2 * torch.pi / length
    angles = torch.outer(torch.arange(frames, dtype=torch.float64), freqs)
    return angles.cos().repeat_interleave(2, dim=1).float(), angles.sin().repeat_interleave(2, dim=1).float()


def test_the_hook_sets_the_sixth_time_frequency_to_one_period_over_the_video_and_changes_nothing_else():
    rope = WanRotaryPosEmbed(attention_head_dim=128, patch_size=(1, 2, 2), max_seq_len=1024)
    latents = torch.zeros(1, 16, 30, 8, 6)  # 30 latent frames (117 video frames), a 4 x 3 patch grid
    plain_cos, plain_sin = rope(latents)
    seen: list[int] = []
    registry = HookRegistry.check_if_exists_or_initialize(rope)
    registry.register_hook(RiflexHook(seen), "riflex")
    cos, sin = rope(latents)
    registry.remove_hook("riflex")
    assert seen == [30]
    want_cos, want_sin = wangp_time_rope(rope.t_dim, 30, k=6, length=30)
    tokens = lambda x: x[0, :, 0].view(30, 12, -1)  # noqa: E731  (frame, patch, channels)
    assert torch.allclose(tokens(cos)[:, :, :rope.t_dim], want_cos[:, None].expand(30, 12, -1), atol=1e-6)
    assert torch.allclose(tokens(sin)[:, :, :rope.t_dim], want_sin[:, None].expand(30, 12, -1), atol=1e-6)
    # Only the 6th frequency's two columns moved; height and width untouched.
    changed = (cos != plain_cos).any(dim=1).flatten().nonzero().flatten().tolist()
    assert changed == [10, 11]
    assert torch.equal(sin[..., rope.t_dim:], plain_sin[..., rope.t_dim:])
    # Removed: the module is back to its own table.
    assert torch.equal(rope(latents)[0], plain_cos)
