"""Normalized attention guidance (WanGP's ``NAG_scale``, ``NAG_tau``, ``NAG_alpha``) in Wan's text
cross-attention, installed for one call and removed after it.

As in WanGP, the conditional pass attends to the prompt and to the negative prompt; its text attention
becomes ``g = pos * scale - neg * (scale - 1)``, rescaled per token so that its L1 norm is at most ``tau``
times the positive one's, and blended ``alpha * g + (1 - alpha) * pos`` (before the output projection;
the image tokens of image-to-video models are attended to as usual and added). Unconditional passes
(classifier-free guidance) attend to their own prompt only. NAG needs no unconditional pass, so it also
works at guidance_scale 1, where the negative prompt otherwise does nothing.

How the negative tokens reach the attention: a hook on each denoiser appends the negative prompt's
embeddings to ``encoder_hidden_states`` (after the prompt's, same length), so the model's own text
projection (LoRAs, offloading and all) maps them; every cross-attention of that model gets the processor
below, which splits them off again. The appended tensor is built once per input tensor, so the
conditional and unconditional calls of every step see the same objects and batched guidance still runs
them as one batch: the hook tells the processors how many leading rows of the batch are conditional.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import StateManager
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_wan import _get_added_kv_projections, _get_qkv_projections

from source.engine.guidance_batching import _ContextOnly
from source.engine.params import GenerationParams

log = structlog.get_logger(__name__)

HOOK_NAME = "normalized_attention_guidance"


@dataclass
class _Pass:
    """What the processors of one model need to know about the forward running now."""

    text_tokens: int = 0  # length of the prompt's (and of the appended negative's) token sequence
    conditional_rows: int = 0  # leading rows of the batch that attend to the negative too
    guided_passes: int = 0
    _appended: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def with_negative(self, text: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """``text`` followed by the negative's tokens: the same object for the same ``text`` object."""
        kept = self._appended.get(id(text))
        if kept is not None and kept[0] is text:
            return kept[1]
        appended = torch.cat([text, negative.to(text).expand(text.shape[0], -1, -1)], dim=1)
        if len(self._appended) >= 2:  # a step's prompt and negative; a new call (window) brings new ones
            del self._appended[next(iter(self._appended))]
        self._appended[id(text)] = (text, appended)
        return appended


class NagContextHook(ModelHook):
    """On a denoiser: appends the negative prompt's embeddings and marks the conditional rows."""

    _is_stateful = True

    def __init__(self, negative_for: Callable[[int], torch.Tensor], state: _Pass) -> None:
        super().__init__()
        self.state_manager = StateManager(_ContextOnly)
        self.negative_for, self.state = negative_for, state

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        return module  # what it keeps lasts exactly the call it is installed for

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        text = kwargs.get("encoder_hidden_states")
        if args or text is None:
            raise RuntimeError("normalized attention guidance: the denoiser was called without keyword "
                               "encoder_hidden_states")
        context = self.state_manager._context
        state = self.state
        state.text_tokens = text.shape[1]
        state.conditional_rows = 0 if context is not None and context.name == "uncond" else text.shape[0]
        state.guided_passes += state.conditional_rows > 0
        kwargs["encoder_hidden_states"] = state.with_negative(text, self.negative_for(text.shape[1]))
        try:
            return self.fn_ref.original_forward(**kwargs)
        finally:
            state.conditional_rows = 0


class NagAttnProcessor:
    """A Wan cross-attention with NAG on the conditional rows (the others attend as usual)."""

    def __init__(self, original: Any, state: _Pass, scale: float, tau: float, alpha: float) -> None:
        self.original, self.state = original, state
        self.scale, self.tau, self.alpha = scale, tau, alpha

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor | None = None, rotary_emb=None) -> torch.Tensor:
        # Wan's cross-attention takes no mask and no rotary embedding. The image tokens (I2V) are what
        # precedes the text: diffusers assumes 512 text tokens, the same at the real models' length.
        tokens, rows = self.state.text_tokens, self.state.conditional_rows
        image = encoder_hidden_states[:, :-2 * tokens] if attn.add_k_proj is not None else None
        text, negative = encoder_hidden_states[:, -2 * tokens:-tokens], encoder_hidden_states[:rows, -tokens:]
        query, key, value = _get_qkv_projections(attn, hidden_states, torch.cat([text, negative]))
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (t.unflatten(2, (attn.heads, -1)) for t in (query, key, value))
        attended = self._attend(torch.cat([query, query[:rows]]), key, value).type_as(query)
        batch = hidden_states.shape[0]
        out = attended[:batch]
        if rows:
            out = torch.cat([self._guided(out[:rows], attended[batch:]), out[rows:]])
        if image is not None:
            key_img, value_img = _get_added_kv_projections(attn, image)
            key_img = attn.norm_added_k(key_img).unflatten(2, (attn.heads, -1))
            out = out + self._attend(query, key_img, value_img.unflatten(2, (attn.heads, -1))).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))

    def _attend(self, query, key, value) -> torch.Tensor:
        return dispatch_attention_fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                     backend=getattr(self.original, "_attention_backend", None)).flatten(2, 3)

    def _guided(self, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        guided = positive * self.scale - negative * (self.scale - 1)
        norm_positive = positive.norm(p=1, dim=-1, keepdim=True)
        norm_guided = guided.norm(p=1, dim=-1, keepdim=True)
        ratio = torch.nan_to_num(norm_guided / norm_positive, nan=10.0)
        capped = guided * (norm_positive * self.tau / (norm_guided + 1e-7))
        guided = torch.where(ratio > self.tau, capped, guided)
        return guided * self.alpha + positive * (1 - self.alpha)


def cross_attentions(model: torch.nn.Module) -> list[torch.nn.Module]:
    from diffusers.models.transformers.transformer_wan import WanAttention

    return [m for m in model.modules() if isinstance(m, WanAttention) and m.is_cross_attention]


@contextmanager
def normalized_attention_guidance(pipe, params: GenerationParams) -> Iterator[dict[str, Any] | None]:
    """NAG on each denoiser of a Wan pipeline for one call; yields the row's ``result`` entry (its pass
    count filled when the call ends), or None when ``NAG_scale`` is 1 or less (off)."""
    if params.NAG_scale <= 1.0:
        yield None
        return
    from source.engine.loras import expert_components

    negatives: dict[int, torch.Tensor] = {}

    def negative_for(tokens: int) -> torch.Tensor:
        # Encoded on first use, at the prompt's own token length (the pipeline's max_sequence_length).
        if tokens not in negatives:
            negatives[tokens] = pipe.encode_prompt(
                params.negative_prompt, do_classifier_free_guidance=False, num_videos_per_prompt=1,
                max_sequence_length=tokens, device=pipe._execution_device)[0]
        return negatives[tokens]

    models = [getattr(pipe, name) for name in expert_components(pipe)]
    states, originals = [], []
    for model in models:
        state = _Pass()
        states.append(state)
        for attention in cross_attentions(model):
            originals.append((attention, attention.processor))
            attention.set_processor(NagAttnProcessor(attention.processor, state, params.NAG_scale,
                                                     params.NAG_tau, params.NAG_alpha))
        HookRegistry.check_if_exists_or_initialize(model).register_hook(NagContextHook(negative_for, state),
                                                                        HOOK_NAME)
    report: dict[str, Any] = {"scale": params.NAG_scale, "tau": params.NAG_tau, "alpha": params.NAG_alpha,
                              "cross_attention_layers": len(originals)}
    try:
        yield report
    finally:
        for model in models:
            HookRegistry.check_if_exists_or_initialize(model).remove_hook(HOOK_NAME, recurse=False)
        for attention, processor in originals:
            attention.set_processor(processor)
        report["guided_passes"] = sum(state.guided_passes for state in states)
        log.info("normalized_attention_guidance_applied", **report)
