"""The step caches on real tiny pipelines: what runs is the plan, and the plan is WanGP's rule applied to
what the transformer really computes; each expert of a two-expert model keeps its own cache state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from source.engine.model_defs import EngineOptions, load_model_def
from source.engine.step_cache import step_cache
from tests.engine.test_guidance_variants import params_for
from tests.engine.test_speed_options import block_calls, pipeline, run


def wangp_teacache(embeddings: list[torch.Tensor], coefficients, threshold: float, start_step: int) -> list[bool]:
    """WanGP's TeaCache decisions (models/wan/modules/model.py) over the embeddings of each step."""
    rescale = np.poly1d(coefficients)
    computed, accumulated, previous = [], 0.0, None
    for step, e in enumerate(embeddings):
        if step < start_step or step == len(embeddings) - 1 or previous is None:
            compute, accumulated = True, 0.0
        else:
            accumulated += abs(rescale(((e - previous).abs().mean() / previous.abs().mean()).item()))
            compute = accumulated >= threshold
            if compute:
                accumulated = 0.0
        computed.append(compute)
        previous = e
    return computed


@pytest.mark.parametrize("batch_cfg", [True, False])
def test_teacache_skips_exactly_where_wangps_rule_on_the_transformers_own_embeddings_says(batch_cfg):
    steps = 12
    params = params_for("tiny_t2v", skip_steps_cache_type="tea", skip_steps_multiplier=2.0,
                        skip_steps_start_step_perc=20, num_inference_steps=steps)
    pipe = pipeline("tiny_t2v", EngineOptions(batch_cfg=batch_cfg))
    seen: list[tuple[float, torch.Tensor]] = []
    transformer = pipe.transformer
    timesteps: list[float] = []
    transformer.register_forward_pre_hook(lambda _m, _a, kw: timesteps.append(float(kw["timestep"][0])),
                                          with_kwargs=True)

    def keep(_module, _inputs, out) -> None:
        if timesteps:  # inside the transformer's calls only (planning runs the embedder before the call)
            seen.append((timesteps[-1], out[0].detach().float().clone()))

    transformer.condition_embedder.time_embedder.register_forward_hook(keep)
    blocks = block_calls(transformer.blocks[1].ffn)
    # The tiny model's own calibration (WanGP's Wan 2.1 sets never skip on random weights).
    coefficients = load_model_def("tiny_t2v").teacache_coefficients
    with step_cache(pipe, params, "wan_t2v", coefficients) as report:
        run(pipe, "tiny_t2v", num_inference_steps=steps, output_type="latent")
    # One embedding per step (the unconditional call of a step sees the same timestep).
    per_step = [e for index, (t, e) in enumerate(seen) if index == 0 or t != seen[index - 1][0]]
    assert len(per_step) == steps
    assert report["coefficients"] == "model definition"
    expected = wangp_teacache(per_step, coefficients, report["threshold"], report["start_step"])
    skipped = [step for step, compute in enumerate(expected) if not compute]
    assert report["skipped_steps"] == skipped and skipped and min(skipped) >= report["start_step"] == 2
    calls_per_step = 1 if batch_cfg else 2
    assert report["passes_skipped"] == calls_per_step * len(skipped)
    assert blocks[0] == report["full_passes"] == report["transformer_passes"] - report["passes_skipped"]
    # No hook stays behind: the next call runs every block.
    before = blocks[0]
    run(pipe, "tiny_t2v", num_inference_steps=steps, output_type="latent")
    assert blocks[0] - before == report["transformer_passes"]


@pytest.mark.parametrize("cache_type", ["mag", "tea"])
def test_each_expert_starts_its_cache_afresh_at_the_switch(cache_type):
    steps = 16
    params = params_for("tiny_t2v_2_2", skip_steps_cache_type=cache_type, skip_steps_multiplier=2.5,
                        num_inference_steps=steps)
    pipe = pipeline("tiny_t2v_2_2", EngineOptions())
    high, low = block_calls(pipe.transformer.blocks[1].ffn), block_calls(pipe.transformer_2.blocks[1].ffn)
    plain = run(pipe, "tiny_t2v_2_2", num_inference_steps=steps, output_type="latent")
    high_plain, low_plain = high[0], low[0]
    with step_cache(pipe, params, "wan_t2v", load_model_def("tiny_t2v_2_2").teacache_coefficients) as report:
        cached = run(pipe, "tiny_t2v_2_2", num_inference_steps=steps, output_type="latent")
    switch = report["expert_switch_step"]
    assert 0 < switch < steps
    skipped = report["skipped_steps"]
    # Neither expert reuses a residual in its first two steps (the first has none of its own).
    assert not {0, 1, switch, switch + 1} & set(skipped)
    assert any(s < switch for s in skipped) and any(s > switch for s in skipped), (switch, skipped)
    assert high[0] - high_plain == high_plain - len([s for s in skipped if s < switch])
    assert low[0] - low_plain == low_plain - len([s for s in skipped if s >= switch])
    assert report["passes_skipped"] == len(skipped)
    assert np.abs(cached - plain).mean() > 0


def test_a_definitions_teacache_coefficients_are_the_ones_planned_with_and_bad_ones_are_refused(tmp_path,
                                                                                                monkeypatch):
    import json
    import shutil

    from source.engine.paths import defaults_dir
    from source.engine.step_cache import plan_for
    from source.errors import DefinitionError

    folder = tmp_path / "defaults"
    shutil.copytree(defaults_dir(), folder)
    monkeypatch.setenv("WGP_DEFAULTS_DIR", str(folder))
    own = [0.0, 0.0, 0.0, 0.0, 0.05]  # a flat 0.05 per step: skips until 0.05·n reaches the threshold
    for name, coefficients in (("flat", own), ("bad", ["x"])):
        (folder / f"{name}.json").write_text(json.dumps({"parent": "tiny_t2v", "teacache_coefficients": coefficients}))
    with pytest.raises(DefinitionError, match="teacache_coefficients must be a list of numbers"):
        load_model_def("bad")
    definition = load_model_def("flat")
    assert definition.teacache_coefficients == tuple(own)
    pipe = pipeline("tiny_t2v", EngineOptions())
    params = params_for("tiny_t2v", skip_steps_cache_type="tea", skip_steps_multiplier=2.0, num_inference_steps=12)
    plan = plan_for(pipe, params, "wan_t2v", definition.teacache_coefficients)
    assert plan.coefficients == "model definition"
    # Every step from 2 adds 0.05: a threshold meets 6 full passes of 12 exactly (steps 0, 1 and the last run).
    assert plan.planned_full_steps == 6 and plan.computed[-1] and plan.computed[:2] == (True, True)


@pytest.mark.parametrize(("model_type", "cache_type"), [("tiny_vace", "mag"), ("tiny_vace", "tea"), ("tiny_t2v", "mag")])
def test_a_skipped_step_adds_what_every_block_and_vace_hint_added_in_the_last_full_pass(model_type, cache_type):
    # WanGP's skip: the hidden states after all blocks (VACE hints added between them included) become the
    # blocks' input plus the last full pass's whole change, nothing counted twice.
    steps = 12
    params = params_for(model_type, skip_steps_cache_type=cache_type, skip_steps_multiplier=2.0,
                        num_inference_steps=steps)
    pipe = pipeline(model_type, EngineOptions())
    transformer = pipe.transformer
    inputs, finals = [], []
    transformer.blocks[0].register_forward_pre_hook(lambda _m, args: inputs.append(args[0].clone()))
    transformer.norm_out.register_forward_pre_hook(lambda _m, args: finals.append(args[0].clone()))
    hints = block_calls(transformer.vace_blocks[0].ffn) if model_type == "tiny_vace" else None
    with step_cache(pipe, params, "wan_t2v", load_model_def("tiny_t2v").teacache_coefficients) as report:
        run(pipe, model_type, num_inference_steps=steps, output_type="latent")
    # One call per step, but step 0 runs its unconditional half apart (batched guidance learns it there).
    inputs, finals = [inputs[0], *inputs[2:]], [finals[0], *finals[2:]]
    assert len(inputs) == len(finals) == steps
    skipped = report["skipped_steps"]
    assert skipped
    last_full = None
    for step in range(steps):
        if step in skipped:
            change = finals[last_full] - inputs[last_full]
            assert torch.allclose(finals[step], inputs[step] + change, atol=1e-5), step
        else:
            last_full = step
    if hints is not None:  # VACE's control blocks do not run on a skipped step either
        assert hints[0] == steps + 1 - len(skipped)
