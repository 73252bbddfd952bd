"""Guidance variants (CFG-Zero*, APG) as a hook on Wan's denoiser output: the pipeline's own CFG line then
gives the variant's prediction, batched or not, and nothing of it stays on the pipeline after the call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from source.engine.guidance_variants import HOOK_NAME, GuidanceVariantHook, _Clock, guidance_variant
from source.engine.model_defs import EngineOptions, load_model_def
from source.engine.params import parse_values, resolve
from source.errors import InvalidParams
from tests.engine.test_speed_options import pipeline, run


def params_for(model_type: str, **given):
    return resolve(load_model_def(model_type).settings,
                   parse_values({"prompt": "x", "guidance_scale": 5.0, "num_inference_steps": 4, **given})).params


def combined(hook: GuidanceVariantHook, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
    """What WanPipeline computes from the two outputs the hook hands it."""
    u = hook._unconditional(cond, uncond)
    return u + hook.scale * (cond - u)


def test_the_pipelines_cfg_line_gives_each_variants_prediction():
    torch.manual_seed(0)
    cond, uncond = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 4, 3, 8, 8)
    clock = _Clock(step=5)
    star = GuidanceVariantHook("cfg_zero_star", 5.0, -1, clock)
    alpha = (cond * uncond).flatten(1).sum(1) / uncond.flatten(1).pow(2).sum(1)
    alpha = alpha.view(-1, 1, 1, 1, 1)
    assert torch.allclose(combined(star, cond, uncond), alpha * uncond + 5.0 * (cond - alpha * uncond), atol=1e-5)
    zero = GuidanceVariantHook("cfg_zero_star", 5.0, 5, clock)  # step 5 <= cfg_zero_step 5: zero init
    assert combined(zero, cond, uncond).abs().max() < 1e-5
    apg = GuidanceVariantHook("apg", 5.0, -1, clock)
    guided = combined(apg, cond, uncond) - cond
    # Only the part of (c - u) orthogonal to c is kept (per sample), scaled by (s - 1).
    assert (guided * cond).flatten(1).sum(1).abs().max() < 1e-3
    assert not torch.allclose(guided, 4.0 * (cond - uncond))


@pytest.mark.parametrize("variant", [{"cfg_star_switch": 1, "cfg_zero_step": 0}, {"apg_switch": 1}])
@pytest.mark.parametrize("model_type", ["tiny_t2v", "tiny_t2v_2_2"])
def test_a_variant_gives_the_same_output_batched_or_not_and_changes_it(model_type, variant):
    params = params_for(model_type, **variant)
    plain, batched = pipeline(model_type, EngineOptions(batch_cfg=False)), pipeline(model_type, EngineOptions())
    # Latents: the tiny random VAE barely passes differences on to the decoded frames.
    without = run(plain, model_type, output_type="latent")
    with guidance_variant(plain, params) as report_plain:
        expected = run(plain, model_type, output_type="latent")
    with guidance_variant(batched, params) as report_batched:
        got = run(batched, model_type, output_type="latent")
    noise = np.abs(expected - got).max()
    assert noise < 1e-4
    # Random tiny weights predict small velocities, so guidance moves latents little: still far above noise.
    assert np.abs(expected - without).mean() > max(5e-4, 10 * noise)
    assert report_plain["steps_combined"] == report_batched["steps_combined"] == 4
    # Removed after the call: the next generation is the plain one again.
    assert plain.transformer._diffusers_hook.get_hook(HOOK_NAME) is None
    assert np.abs(run(plain, model_type, output_type="latent") - without).max() < 1e-6


@pytest.mark.parametrize("model_type", ["tiny_t2v", "tiny_t2v_2_2"])
def test_skip_layer_guidance_skips_the_layers_in_the_unconditional_passes_of_its_steps(model_type):
    params = params_for(model_type, slg_switch=1, slg_layers=[0], slg_start_perc=25, slg_end_perc=75)
    plain, batched = pipeline(model_type, EngineOptions(batch_cfg=False)), pipeline(model_type, EngineOptions())
    without = run(plain, model_type, output_type="latent")
    with guidance_variant(plain, params) as report_plain:
        expected = run(plain, model_type, output_type="latent")
    with guidance_variant(batched, params) as report_batched:
        got = run(batched, model_type, output_type="latent")
    assert np.abs(expected - got).max() < 1e-4  # batching pauses: the two passes differ in more than the prompt
    assert np.abs(expected - without).mean() > 5e-4
    # Steps 1 and 2 of 4 (25% to 75%): two unconditional passes without block 0.
    for report in (report_plain, report_batched):
        assert report["skip_layer_guidance"] == {"layers": [0], "steps": [1, 3], "unconditional_passes_skipping": 2}
    assert batched.transformer._diffusers_hook.get_hook("batched_guidance").enabled  # restored
    too_deep = params_for(model_type, slg_switch=1, slg_layers=[99])
    with pytest.raises(InvalidParams, match="params.slg_layers \\[99\\]: give block indices below"), \
            guidance_variant(plain, too_deep):
        pass
