"""Speed options from a definition's ``engine`` section, on real tiny pipelines: the lossless ones keep the
plain path's output, the lossy ones change it and say so, and every one is reachable from a model JSON."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from source.engine import guidance_batching
from source.engine.core import Engine
from source.engine.families import family_for
from source.engine.loading.pipeline import load_pipeline
from source.engine.memory import apply_memory_plan, plan_for
from source.engine.model_defs import EngineOptions, load_model_def
from source.engine.params import parse_values, resolve
from source.engine.paths import defaults_dir
from source.engine.speed import apply_speed_options, fastest, usable_attention_backends
from source.errors import DefinitionError

CALL = {"prompt": "a red cat dances", "negative_prompt": "blurry", "height": 32, "width": 32,
        "num_inference_steps": 4, "output_type": "np"}
FRAMES = {"tiny_t2v": 5, "tiny_t2v_2_2": 5, "tiny_vace": 5, "tiny_i2v": 5, "tiny_i2v_2_2": 5}


def pipeline(model_type: str, options: EngineOptions):
    definition = dataclasses.replace(load_model_def(model_type), engine=options)
    pipe = load_pipeline(definition, family_for(definition.architecture).pipeline_class())
    apply_speed_options(pipe, options)
    return pipe


def block_calls(block) -> list[int]:
    """Counts forwards that really ran through a module (hooks on it or above may answer without running it)."""
    count = [0]
    block.register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    return count


def run(pipe, model_type: str, seed: int = 3, **extra) -> np.ndarray:
    kwargs = {**CALL, "num_frames": FRAMES[model_type], "generator": torch.Generator().manual_seed(seed), **extra}
    with torch.inference_mode():
        return np.asarray(pipe(**kwargs).frames[0])


@pytest.fixture
def still(still_image):
    from PIL import Image

    return Image.open(still_image).convert("RGB").resize((32, 32))


@pytest.mark.parametrize("model_type", ["tiny_t2v", "tiny_t2v_2_2", "tiny_vace", "tiny_i2v", "tiny_i2v_2_2"])
def test_batched_guidance_runs_one_forward_per_step_and_matches_the_plain_path(model_type, still):
    extra = {"image": still} if model_type.startswith("tiny_i2v") else {}
    plain = pipeline(model_type, EngineOptions(batch_cfg=False))
    batched = pipeline(model_type, EngineOptions(batch_cfg=True))
    plain_calls, batched_calls = block_calls(plain.transformer.blocks[0]), block_calls(batched.transformer.blocks[0])

    expected = run(plain, model_type, **extra)
    got = run(batched, model_type, **extra)

    assert np.abs(expected - got).max() < 1e-4
    hook = guidance_batching.hook_of(batched.transformer)
    assert hook is not None and hook.batched_steps > 0
    # The first step of each expert learns the negative embeddings (two forwards); every later one is one.
    assert batched_calls[0] == plain_calls[0] - hook.batched_steps
    assert not np.array_equal(run(batched, model_type, seed=4, **extra), got)


def test_without_guidance_there_is_nothing_to_batch():
    pipe = pipeline("tiny_t2v", EngineOptions(batch_cfg=True))
    calls = block_calls(pipe.transformer.blocks[0])
    run(pipe, "tiny_t2v", guidance_scale=1.0)
    assert calls[0] == CALL["num_inference_steps"]
    assert guidance_batching.hook_of(pipe.transformer).batched_steps == 0


def test_an_uncond_call_with_new_inputs_is_computed_not_answered_from_the_batch():
    """A step callback that swaps the negative embeddings each step: the batch was built from the old ones, so
    every unconditional call must run on its own and the result must equal the plain path's."""

    def new_negative_each_step(pipe, step, timestep, tensors):
        noise = torch.randn(tensors["negative_prompt_embeds"].shape, generator=torch.Generator().manual_seed(step))
        return {"negative_prompt_embeds": noise * 10}

    extra = {"callback_on_step_end": new_negative_each_step,
             "callback_on_step_end_tensor_inputs": ["latents", "negative_prompt_embeds"]}
    plain = pipeline("tiny_t2v", EngineOptions(batch_cfg=False))
    batched = pipeline("tiny_t2v", EngineOptions(batch_cfg=True))
    assert np.abs(run(plain, "tiny_t2v", **extra) - run(batched, "tiny_t2v", **extra)).max() < 1e-4
    without_callback = run(batched, "tiny_t2v")
    assert np.abs(without_callback - run(batched, "tiny_t2v", **extra)).max() > 1e-2


def test_hook_state_does_not_leak_into_the_next_generation():
    pipe = pipeline("tiny_t2v", EngineOptions(batch_cfg=True))
    first = run(pipe, "tiny_t2v", negative_prompt="blurry")
    run(pipe, "tiny_t2v", negative_prompt="dark night city")
    again = run(pipe, "tiny_t2v", negative_prompt="blurry")
    assert np.abs(first - again).max() < 1e-6


def test_fastest_attention_backend_is_the_quickest_that_runs():
    timings = {"flash": 0.004, "_native_cudnn": 0.002, "native": 0.003}

    def seconds_for(name):
        if name == "_native_cudnn":
            raise RuntimeError("no kernel for this head size")
        return timings[name]

    assert fastest(["flash", "_native_cudnn", "native"], seconds_for) == "native"
    assert fastest(["flash", "native"], timings.get) == "native"
    assert fastest([], timings.get) == "native"
    assert usable_attention_backends(torch.device("cpu")) == ["native"]


def test_vae_dtype_loads_the_vae_alone_in_that_dtype():
    pipe = pipeline("tiny_t2v", EngineOptions(vae_dtype="bfloat16"))
    assert pipe.vae.dtype == torch.bfloat16
    assert pipe.transformer.dtype == torch.float32
    reference = run(pipeline("tiny_t2v", EngineOptions()), "tiny_t2v")
    frames = run(pipe, "tiny_t2v")
    assert frames.shape == reference.shape and np.isfinite(frames).all()
    psnr = 10 * np.log10(1.0 / np.mean((frames - reference) ** 2))
    assert psnr > 25, psnr


def test_fp8_stores_transformer_weights_in_float8_and_changes_output_a_little():
    pipe = pipeline("tiny_t2v", EngineOptions(fp8=True))
    linear_dtypes = {m.weight.dtype for m in pipe.transformer.modules() if isinstance(m, torch.nn.Linear)}
    assert torch.float8_e4m3fn in linear_dtypes
    reference = run(pipeline("tiny_t2v", EngineOptions()), "tiny_t2v")
    frames = run(pipe, "tiny_t2v")
    difference = np.abs(frames - reference)
    assert difference.max() > 0 and difference.mean() < 0.05


def test_first_block_cache_skips_full_passes_once_steps_look_alike():
    plain = pipeline("tiny_t2v", EngineOptions(batch_cfg=False))
    cached = pipeline("tiny_t2v", EngineOptions(batch_cfg=False, first_block_cache=10.0))
    plain_calls, cached_calls = block_calls(plain.transformer.blocks[-1].ffn), block_calls(cached.transformer.blocks[-1].ffn)
    steps = 8
    reference = run(plain, "tiny_t2v", num_inference_steps=steps)
    frames = run(cached, "tiny_t2v", num_inference_steps=steps)
    assert plain_calls[0] == 2 * steps
    assert cached_calls[0] < plain_calls[0]
    assert np.isfinite(frames).all() and np.abs(frames - reference).max() > 0


def test_group_offload_profile_keeps_the_results(tmp_path):
    reference = run(pipeline("tiny_t2v", EngineOptions()), "tiny_t2v")
    pipe = pipeline("tiny_t2v", EngineOptions(profile=4))
    # No accelerator here: stream the groups to the CPU itself, which exercises the same hooks.
    assert apply_memory_plan(pipe, plan_for(EngineOptions(profile=4)), device=torch.device("cpu")) == "group"
    assert np.abs(run(pipe, "tiny_t2v") - reference).max() < 1e-5


@pytest.fixture
def definitions(tmp_path, monkeypatch):
    folder = tmp_path / "defaults"
    shutil.copytree(defaults_dir(), folder)
    monkeypatch.setenv("WGP_DEFAULTS_DIR", str(folder))

    def write(model_type: str, engine: dict) -> str:
        (folder / f"{model_type}.json").write_text(json.dumps({"parent": "tiny_t2v", "engine": engine}))
        return model_type

    return write


def test_engine_options_come_from_the_model_json_and_bad_ones_are_clear_errors(tmp_path, definitions):
    model_type = definitions("tiny_t2v_fast", {"batch_cfg": True, "first_block_cache": 0.05, "vae_dtype": "float32"})
    engine = Engine()
    resolved = resolve(load_model_def(model_type).settings,
                       parse_values({"prompt": "a cat", "seed": 1, "num_inference_steps": 3}))
    result = engine.generate(model_type, resolved, output_dir=tmp_path / "out")
    assert result.paths[0].stat().st_size > 0
    transformer = engine.resident.pipe.transformer
    assert guidance_batching.hook_of(transformer) is not None
    assert transformer._cache_config.threshold == 0.05

    for engine_section, message in [({"first_block_cache": -1}, "first_block_cache"),
                                    ({"vae_dtype": "int8"}, "vae_dtype"),
                                    ({"attention": "warp"}, "attention 'warp' is not a diffusers attention backend"),
                                    ({"turbo": True}, "turbo")]:
        bad = definitions("tiny_t2v_bad", engine_section)
        with pytest.raises(DefinitionError, match=message) as error:  # the operator's file, not the task
            load_model_def(bad)
        assert "tiny_t2v_bad" in str(error.value)


def test_fp8_weights_take_a_lora_and_drop_it_afterwards(tmp_path, monkeypatch):
    from source.engine.loras import applied_loras
    from tests.generation.tiny_lora import make_tiny_wan_lora

    make_tiny_wan_lora(tmp_path / "wan", "style", strength=3.0)
    monkeypatch.setenv("WGP_LORA_DIR", str(tmp_path))
    pipe = pipeline("tiny_t2v", EngineOptions(fp8=True))
    before = run(pipe, "tiny_t2v")
    with applied_loras(pipe, "wan", ["style"], [(1.0,)]):
        styled = run(pipe, "tiny_t2v")
    assert np.abs(styled - before).max() > 0.05
    assert np.array_equal(run(pipe, "tiny_t2v"), before)


def test_a_batch_that_runs_out_of_memory_falls_back_to_one_pass_at_a_time():
    """The accelerator cannot be made to run out of memory here, so the block below raises what CUDA raises
    when a batch of two does not fit; a batch of one still does."""
    plain = pipeline("tiny_t2v", EngineOptions(batch_cfg=False))
    batched = pipeline("tiny_t2v", EngineOptions(batch_cfg=True))
    batch_sizes = []

    def no_room_for_two(module, args, kwargs):
        batch_sizes.append(kwargs["hidden_states"].shape[0] if "hidden_states" in kwargs else args[0].shape[0])
        if batch_sizes[-1] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    batched.transformer.blocks[0].register_forward_pre_hook(no_room_for_two, with_kwargs=True)
    expected = run(plain, "tiny_t2v")
    got = run(batched, "tiny_t2v")

    assert np.abs(expected - got).max() < 1e-4
    hook = guidance_batching.hook_of(batched.transformer)
    assert hook.too_large_from is not None and hook.batched_steps == 0
    assert batch_sizes.count(2) == 1  # tried once, then never again at this size
    run(batched, "tiny_t2v")
    assert batch_sizes.count(2) == 1
    # A smaller generation still gets its batch (and here runs out again, so it too falls back).
    run(batched, "tiny_t2v", height=16, width=16)
    assert batch_sizes.count(2) == 2


def test_an_attention_backend_this_machine_lacks_falls_back_to_the_fastest_it_has():
    pipe = pipeline("tiny_t2v", EngineOptions(attention="_flash_3"))  # FlashAttention 3: not installed here
    from diffusers.models.attention_dispatch import AttentionBackendName

    assert pipe.transformer.blocks[0].attn1.processor._attention_backend == AttentionBackendName.NATIVE
    assert np.isfinite(run(pipe, "tiny_t2v")).all()


def test_batched_guidance_with_per_token_timesteps_as_wan_2_2_ti2v_uses():
    """Wan 2.2 TI2V pipelines pass a (batch, tokens) timestep (``expand_timesteps``); it is batched like the rest."""
    plain = pipeline("tiny_t2v", EngineOptions(batch_cfg=False))
    batched = pipeline("tiny_t2v", EngineOptions(batch_cfg=True))
    for pipe in (plain, batched):
        pipe.register_to_config(expand_timesteps=True)
    assert np.abs(run(plain, "tiny_t2v") - run(batched, "tiny_t2v")).max() < 1e-4
    assert guidance_batching.hook_of(batched.transformer).batched_steps == CALL["num_inference_steps"] - 1


def test_speed_options_report_batched_guidance_only_where_it_runs():
    flux = load_pipeline(load_model_def("tiny_flux"), family_for("flux").pipeline_class())
    wan = load_pipeline(load_model_def("tiny_t2v"), family_for("wan_t2v").pipeline_class())
    assert apply_speed_options(flux, EngineOptions(batch_cfg=True))["batch_cfg"] is False  # no Wan denoiser
    assert apply_speed_options(wan, EngineOptions(batch_cfg=True))["batch_cfg"] is True
