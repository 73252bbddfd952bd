"""Per-box engine flags of ``worker.py`` (``--wgp-*``): the memory profile, attention kernel, compile and
dtypes this box's card wants, overriding every model definition's ``engine`` section. The older worker's
flags that no longer mean anything are still accepted, with a warning naming what replaced them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click
import structlog

from source.engine.model_defs import ENGINE_OVERRIDE_ENV, parse_engine_override
from source.errors import InvalidParams

log = structlog.get_logger(__name__)

_FLAGS = {
    "profile": ("--wgp-profile", "Memory profile 1..5 for every model on this box (1 all resident ... "
                                 "5 sequential offload)"),
    "attention": ("--wgp-attention-mode", "Attention kernel: auto, sdpa, flash, sage, sage2 or a diffusers "
                                          "backend name"),
    "compile": ("--wgp-compile", "Regional torch.compile of the denoisers: transformer/true or false "
                                 "(bare flag = transformer)"),
    "dtype": ("--wgp-transformer-dtype-policy", "Model dtype: bf16 or fp16 (\"\" = the definition's)"),
    "vae_dtype": ("--wgp-vae-precision", "VAE dtype: 16, 32, bfloat16, float16 or float32"),
}

# The older worker's flags with no meaning here, and what does their job now.
DEPRECATED = {
    "wgp_vae_config": ("--wgp-vae-config", "VAE tiling comes with --wgp-profile 4/5 or a definition's "
                                           "engine.vae_tiling"),
    "wgp_boost": ("--wgp-boost", "conditional and unconditional passes are batched by default "
                                 "(a definition's engine.batch_cfg)"),
    "wgp_transformer_quantization": ("--wgp-transformer-quantization", "a definition's engine.fp8 (float8 "
                                                                       "weights); bf16 is --wgp-transformer-dtype-policy"),
    "wgp_text_encoder_quantization": ("--wgp-text-encoder-quantization", "the text encoder runs at the "
                                                                         "definition's dtype; --wgp-profile 4/5 "
                                                                         "offload it"),
    "wgp_mixed_precision": ("--wgp-mixed-precision", "--wgp-transformer-dtype-policy"),
    "wgp_preload_policy": ("--wgp-preload-policy", "--preload-model NAME"),
    "wgp_preload": ("--wgp-preload", "--wgp-profile (offload decides what stays on the GPU) and "
                                     "--preload-model NAME"),
}


def engine_flag_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the ``--wgp-*`` options (each also read from its WGP_* variable) to a click command."""
    options = []
    for key, (flag, help_text) in _FLAGS.items():
        env = ENGINE_OVERRIDE_ENV[key]
        extra: dict[str, Any] = {"is_flag": False, "flag_value": "transformer"} if key == "compile" else {}
        options.append(click.option(flag, f"engine_{key}", envvar=env, default=None, metavar="VALUE",
                                    help=f"{help_text} [env {env}; overrides every model definition].", **extra))
    for dest, (flag, _) in DEPRECATED.items():
        options.append(click.option(flag, dest, default=None, hidden=True, is_flag=False, flag_value="1"))
    for option in reversed(options):
        func = option(func)
    return func


def apply_engine_flags(opts: Mapping[str, Any]) -> dict[str, Any]:
    """Check the ``--wgp-*`` values and warn about deprecated ones. Returns the overrides in effect, by field
    name, which worker.py passes down in its BoxOptions (source/engine/model_defs.py)."""
    for dest, (flag, replacement) in DEPRECATED.items():
        if opts.get(dest) is not None:
            log.warning("deprecated_flag_ignored", flag=flag, value=opts[dest], replaced_by=replacement)
    in_effect = {}
    for key, (flag, _) in _FLAGS.items():
        text = opts.get(f"engine_{key}")
        if text is None:
            continue
        try:
            value = parse_engine_override(key, str(text))
        except InvalidParams as exc:
            raise click.BadParameter(str(exc), param_hint=flag) from None
        if value is not None:
            in_effect[key] = value
    if in_effect:
        log.info("engine_overrides", **in_effect)
    return in_effect
