"""Every WanGP generation parameter and what this worker does with it: the one table.

The names are WanGP's ``generate_media`` parameters (github.com/deepbeepmeep/Wan2GP at 8681e9f, wgp.py) plus
the older names its settings files still carry (``slg_*``, renamed ``perturbation_*`` in settings 2.54). Each is
``honoured`` (an engine parameter: source/engine/params.py PARSERS), ``translated`` (another name for one),
``refused`` (a row giving it a value other than WanGP's "off" fails naming it and why) or ``session`` (WanGP's
UI and queue plumbing, never a row's to set). Keys no WanGP version defines are the only ones that end in a
row's ``result.ignored_params``. docs/generation-parameters.md is generated from this table
(``python -m source.generation.wangp_parameters``) and a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from source.engine.params import PARSERS
from source.errors import InvalidParams


class State(StrEnum):
    HONOURED = "honoured"
    TRANSLATED = "translated"
    REFUSED = "refused"
    SESSION = "session"


@dataclass(frozen=True)
class WanGPParameter:
    name: str
    state: State
    note: str
    # refused: the values that mean "off" in WanGP (given with one of these, the row runs and nothing is lost)
    off: tuple[Any, ...] = (None, "")


# WanGP's generate_media parameters, in its order (wgp.py at 8681e9f).
WANGP_GENERATE_MEDIA = (  # noqa: SIM905 (the names as one text, word for word WanGP's signature)
    "task send_cmd client_id image_mode prompt alt_prompt negative_prompt resolution video_length duration_seconds "
    "pause_seconds batch_size seed force_fps num_inference_steps guidance_scale guidance2_scale guidance3_scale "
    "switch_threshold switch_threshold2 guidance_phases model_switch_phase alt_guidance_scale alt_scale "
    "audio_guidance_scale audio_scale flow_shift sample_solver embedded_guidance_scale repeat_generation "
    "multi_prompts_gen_type multi_images_gen_type skip_steps_cache_type skip_steps_multiplier "
    "skip_steps_start_step_perc activated_loras loras_multipliers image_prompt_type image_start image_end model_mode "
    "video_source keep_frames_video_source input_video_strength video_prompt_type image_refs frames_positions "
    "video_guide video_guide2 image_guide keep_frames_video_guide denoising_strength masking_strength "
    "video_guide_outpainting video_guide_outpainting_ratio video_mask image_mask control_net_weight "
    "control_net_weight2 control_net_weight_alt motion_amplitude mask_expand audio_guide audio_guide2 custom_guide "
    "audio_source replace_voice_method replace_voice_sample replace_voice_sample2 audio_prompt_type "
    "speakers_locations sliding_window_size sliding_window_overlap sub_parallel_window_size "
    "sub_parallel_window_overlap sliding_window_color_correction_strength sliding_window_overlap_noise "
    "sliding_window_discard_last_frames sliding_window_trim_first_frames image_refs_relative_size "
    "remove_background_images_ref temporal_upsampling spatial_upsampling film_grain_intensity film_grain_saturation "
    "postprocess_audio postprocess_audio_prompt postprocess_audio_neg_prompt RIFLEx_setting NAG_scale NAG_tau "
    "NAG_alpha perturbation_switch perturbation_layers perturbation_start_perc perturbation_end_perc apg_switch "
    "cfg_star_switch cfg_zero_step prompt_enhancer min_frames_if_references override_profile override_attention "
    "attention_sparsity temperature custom_settings top_p top_k self_refiner_setting self_refiner_plan "
    "self_refiner_f_uncertainty self_refiner_certain_percentage output_filename config state model_type mode "
    "plugin_data"
).split()
# Names older WanGP settings carry (renamed since) and the engine's own names of this worker that WanGP reads too.
OLDER_NAMES = ("slg_switch", "slg_layers", "slg_start_perc", "slg_end_perc", "video_mask2")

TRANSLATED: Mapping[str, str] = MappingProxyType({
    "perturbation_switch": "slg_switch", "perturbation_layers": "slg_layers",
    "perturbation_start_perc": "slg_start_perc", "perturbation_end_perc": "slg_end_perc",
})
# Read by the conversion itself (source/generation/conversion.py).
IMAGE_PROMPT_TYPE_NOTE = ("selects the inputs: S uses image_start, E uses image_end (an image left out of the "
                          "letters is not used); V/L (continue a video) are refused")

_ONE = (None, "", 1, 1.0)
_ZERO = (None, "", 0, 0.0, False)
_NO_AUDIO = "no audio model runs here"
REFUSED: Mapping[str, tuple[str, tuple[Any, ...]]] = MappingProxyType({
    "image_mode": ("image output is the task type's (wan_2_2_t2i, flux) or video_length 1, not a mode", (None, 0)),
    "alt_prompt": ("a second prompt is used by models this worker does not run", (None, "")),
    "duration_seconds": ("give video_length (frames)", _ZERO),
    "pause_seconds": ("pauses between queued generations are WanGP's UI queue", _ZERO),
    "force_fps": ("the output rate is the model's (16 for Wan) or the postprocessing's", (None, "", "auto")),
    "alt_guidance_scale": ("used by models this worker does not run", (None, "", 0, 0.0, 1, 1.0)),
    "alt_scale": ("used by models this worker does not run", _ZERO),
    "audio_guidance_scale": (_NO_AUDIO, (None, "", 0, 0.0, 1, 1.0, 4, 4.0)),
    "audio_scale": (_NO_AUDIO, (None, "", 0, 0.0, 1, 1.0)),
    "repeat_generation": ("one row makes one generation; insert one row per repeat (or use batch_size)", _ONE),
    "multi_prompts_gen_type": ("a prompt is one prompt here (no line-per-video or line-per-window split)",
                               (None, "", 0)),
    "multi_images_gen_type": ("image_refs/image_start lists are not split into several generations", (None, "", 0)),
    "model_mode": ("model-specific modes (diffusion forcing, ...) of models this worker does not run", (None, "")),
    "video_source": ("continuing a video (video_source) is not implemented; use a VACE travel with "
                     "continue_from_video_resolved_path", (None, "")),
    "keep_frames_video_source": ("continuing a video is not implemented", (None, "")),
    "input_video_strength": ("continuing a video is not implemented", _ONE),
    "frames_positions": ("placing reference frames at positions is not implemented", (None, "")),
    "image_guide": ("image guides (image models' control input) are not implemented", (None, "")),
    "image_mask": ("image masks (image models' inpainting input) are not implemented", (None, "")),
    "keep_frames_video_guide": ("keeping frames of the guide by index is not implemented; use video_mask",
                                (None, "")),
    "masking_strength": ("partial mask strength is not implemented", _ONE),
    "video_guide_outpainting": ("outpainting the guide is not implemented", (None, "", "#")),
    "video_guide_outpainting_ratio": ("outpainting the guide is not implemented", _ZERO),
    "control_net_weight_alt": ("a third control stream is used by models this worker does not run", _ONE),
    "motion_amplitude": ("motion amplitude (Wan 2.2 5B/animate) is not implemented", _ONE),
    "mask_expand": ("growing the mask is not implemented", _ZERO),
    "audio_guide": (_NO_AUDIO, (None, "")), "audio_guide2": (_NO_AUDIO, (None, "")),
    "custom_guide": ("custom guides of plugin models are not implemented", (None, "")),
    "audio_source": (_NO_AUDIO, (None, "")), "replace_voice_method": (_NO_AUDIO, (None, "")),
    "replace_voice_sample": (_NO_AUDIO, (None, "")), "replace_voice_sample2": (_NO_AUDIO, (None, "")),
    "audio_prompt_type": (_NO_AUDIO, (None, "")), "speakers_locations": (_NO_AUDIO, (None, "")),
    "sub_parallel_window_size": ("parallel sub-windows are not implemented", _ZERO),
    "sub_parallel_window_overlap": ("parallel sub-windows are not implemented", _ZERO),
    "sliding_window_trim_first_frames": ("trimming a window's first frames is not implemented", _ZERO),
    "image_refs_relative_size": ("reference images are passed whole; resizing them relative to the frame is not "
                                 "implemented", (None, "")),
    "remove_background_images_ref": ("removing reference images' backgrounds is not implemented", _ZERO),
    "postprocess_audio": (_NO_AUDIO, _ZERO), "postprocess_audio_prompt": (_NO_AUDIO, (None, "")),
    "postprocess_audio_neg_prompt": (_NO_AUDIO, (None, "")),
    "prompt_enhancer": ("prompt enhancement (a language model) is not run here", (None, "")),
    "min_frames_if_references": ("used by models this worker does not run", (None, "", 1)),
    "override_profile": ("the memory profile is the worker's (--wgp-profile / WGP_PROFILE), not a row's",
                         (None, "", -1)),
    "override_attention": ("the attention backend is the worker's (--wgp-attention-mode), not a row's",
                           (None, "")),
    "attention_sparsity": ("sparse attention is not implemented", _ZERO),
    "temperature": ("sampling temperature is an audio/language model setting", (None, "")),
    "top_p": ("an audio/language model setting", (None, "")), "top_k": ("an audio/language model setting", (None, "")),
    "custom_settings": ("plugin settings are not implemented", (None, "", {})),
    "self_refiner_setting": ("WanGP's self refiner is not implemented", _ZERO),
    "self_refiner_plan": ("WanGP's self refiner is not implemented", (None, "", [])),
    "self_refiner_f_uncertainty": ("WanGP's self refiner is not implemented", (None, "")),
    "self_refiner_certain_percentage": ("WanGP's self refiner is not implemented", (None, "")),
    "output_filename": ("output names are the worker's (a row never names a file outside its folder)", (None, "")),
})
# reigh-worker's own generation switches (not WanGP's): refused by name the same way.
REIGH_WORKER_REFUSED: Mapping[str, tuple[str, tuple[Any, ...]]] = MappingProxyType({
    "use_svi": ("SVI latent chaining (Stable Video Infinity) is not implemented here", _ZERO),
    "use_uni3c": ("Uni3C camera/motion guidance is not implemented here", _ZERO),
    "uni3c_guide_video": ("Uni3C guidance is not implemented here", (None, "")),
    "uni3c_strength": ("Uni3C guidance is not implemented here", (None, "")),
})

SESSION: Mapping[str, str] = MappingProxyType({
    "task": "WanGP's queue entry", "send_cmd": "WanGP's UI callback", "client_id": "WanGP's UI session",
    "config": "WanGP's server config", "state": "WanGP's UI state", "mode": "WanGP's UI mode",
    "plugin_data": "WanGP's plugins", "model_type": "the model: params.model (a defaults/<model>.json name)",
})


def _build() -> Mapping[str, WanGPParameter]:
    table: dict[str, WanGPParameter] = {}
    for name in (*WANGP_GENERATE_MEDIA, *OLDER_NAMES):
        if name in PARSERS:
            table[name] = WanGPParameter(name, State.HONOURED, "engine parameter (source/engine/params.py)")
        elif name in TRANSLATED:
            table[name] = WanGPParameter(name, State.TRANSLATED, f"read as {TRANSLATED[name]}")
        elif name == "image_prompt_type":
            table[name] = WanGPParameter(name, State.TRANSLATED, IMAGE_PROMPT_TYPE_NOTE)
        elif name in REFUSED:
            reason, off = REFUSED[name]
            table[name] = WanGPParameter(name, State.REFUSED, reason, off)
        elif name in SESSION:
            table[name] = WanGPParameter(name, State.SESSION, SESSION[name])
        else:
            raise ValueError(f"WanGP parameter {name!r} has no state in this table")
    return MappingProxyType(table)


WANGP_PARAMETERS: Mapping[str, WanGPParameter] = _build()


def check_refused(values: Mapping[str, Any], where: str = "params.") -> list[str]:
    """The WanGP parameters among ``values`` that this worker does not run: InvalidParams for the first set to
    anything but WanGP's "off"; returns the names given at "off" (nothing is lost by not running them)."""
    at_off = []
    for key, value in values.items():
        if key in REIGH_WORKER_REFUSED:
            reason, off = REIGH_WORKER_REFUSED[key]
            if not _is_off(value, off):
                raise InvalidParams(f"{where}{key} {value!r}: {reason}; leave it out")
            at_off.append(key)
            continue
        entry = WANGP_PARAMETERS.get(key)
        if entry is None or entry.state not in (State.REFUSED, State.SESSION):
            continue
        if entry.state is State.SESSION or _is_off(value, entry.off):
            at_off.append(key)
            continue
        raise InvalidParams(f"{where}{key} {value!r}: {entry.note}; leave it out (or at {_shown(entry.off)})")
    return at_off


def _is_off(value: Any, off: tuple[Any, ...]) -> bool:
    # True is not 1 here: a switch given as a boolean is off only as False
    return any(isinstance(value, bool) == isinstance(candidate, bool) and value == candidate for candidate in off)


def _shown(off: tuple[Any, ...]) -> str:
    shown = [repr(v) for v in off if v not in (None, "")]
    return " / ".join(shown) if shown else "empty"


def markdown_table() -> str:
    rows = ["| parameter | state | what happens |", "| --- | --- | --- |"]
    for entry in WANGP_PARAMETERS.values():
        off = f" (accepted at {_shown(entry.off)})" if entry.state is State.REFUSED else ""
        rows.append(f"| `{entry.name}` | {entry.state.value} | {entry.note}{off} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())


def split_extras(extras: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """An orchestrator's params nothing of its own reads: the WanGP engine parameters among them (to pass on to
    the generations it runs), and the keys no WanGP version defines (its ignored_params). A WanGP parameter
    this worker does not run fails here (source: ``check_refused``)."""
    forward = {TRANSLATED.get(key, key): value for key, value in extras.items()
               if TRANSLATED.get(key, key) in PARSERS and value is not None}
    rest = {key: value for key, value in extras.items() if TRANSLATED.get(key, key) not in PARSERS}
    at_off = set(check_refused(rest, where))
    return forward, sorted(key for key in rest if key not in at_off and key not in WANGP_PARAMETERS)
