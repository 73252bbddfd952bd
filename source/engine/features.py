"""WanGP's generation features: which ones a row switched on, and a refusal naming the parameter for those
this engine (or this family) cannot apply. Checked in the prepare stage, before any model switch.

Each feature is off at its WanGP default (source/engine/params.py); a row that carries a setting at its
off value asks for nothing, and one that switches a feature on gets it or fails with the reason.
"""

from __future__ import annotations

from source.engine.families import family_for
from source.engine.params import GenerationParams, valid_frame_count
from source.engine.windows import CONTINUATIONS, continuation_for, overlap_for
from source.errors import InvalidParams


def check_supported(params: GenerationParams, architecture: str, *, image_output: bool) -> None:
    """Raise InvalidParams for the first requested feature that cannot apply here."""
    wan = architecture.startswith("wan_")
    takes = family_for(architecture).takes
    for name, asked in (("image_mask", params.image_mask is not None), ("denoising_strength",
                        params.denoising_strength < 1.0), ("system_prompt", bool(params.system_prompt))):
        if asked and name not in takes:
            raise InvalidParams(f"params.{name}: {architecture} models do not take it (only image models with "
                                f"image-to-image or a chat-template text encoder do); leave {name} out")
    if params.output_format != "png" and not image_output and params.video_length > 1:
        raise InvalidParams(f"params.output_format {params.output_format!r}: this generation is a video (mp4); "
                            "output_format applies to images")
    if image_output or params.video_length == 1:
        for name in ("temporal_upsampling",):
            if getattr(params, name):
                raise InvalidParams(f"params.{name} {getattr(params, name)!r}: this model makes images, "
                                    f"there are no frames to interpolate; leave {name} out")
    if params.skip_steps_cache_type and not wan:
        raise InvalidParams(f"params.skip_steps_cache_type {params.skip_steps_cache_type!r}: step caches are "
                            f"calibrated for Wan models only, not {architecture}")
    if params.slg_switch and params.slg_start_perc >= params.slg_end_perc:
        raise InvalidParams(f"params.slg_start_perc {params.slg_start_perc:g} must be below slg_end_perc "
                            f"{params.slg_end_perc:g}")
    for name, on in (("cfg_star_switch", params.cfg_star_switch), ("apg_switch", params.apg_switch),
                     ("slg_switch", params.slg_switch)):
        if on and not wan:
            raise InvalidParams(f"params.{name}: this guidance variant needs classifier-free guidance with a "
                                f"negative prompt pass (Wan models); {architecture} has none")
        if on and params.guidance_scale <= 1.0:
            raise InvalidParams(f"params.{name}: guidance_scale {params.guidance_scale:g} runs no unconditional pass "
                                f"to combine; it needs guidance_scale above 1")
    if params.NAG_scale > 1.0 and not wan:
        raise InvalidParams(f"params.NAG_scale {params.NAG_scale:g}: normalized attention guidance is built for "
                            f"Wan models' text cross-attention only, not {architecture}; leave NAG_scale at 1 "
                            f"(off)")
    if params.cfg_star_switch and params.apg_switch:
        raise InvalidParams("params.cfg_star_switch and params.apg_switch both change how guidance combines "
                            "the two passes; choose one")
    window = params.sliding_window_size
    if window is not None and params.video_length > window:
        _check_windows(params, architecture, window)
    if params.RIFLEx_setting == 1:
        _check_riflex(params, architecture, image_output)


def _check_riflex(params: GenerationParams, architecture: str, image_output: bool) -> None:
    """RIFLEx forced on (1) where it cannot apply; WanGP's automatic RIFLEx (0) is off for such models."""
    if image_output or params.video_length == 1:
        raise InvalidParams("params.RIFLEx_setting 1: RIFLEx changes the time axis of a video and this model "
                            "makes images; leave RIFLEx_setting out")
    if not architecture.startswith("wan_"):
        raise InvalidParams(f"params.RIFLEx_setting 1: RIFLEx is built for the Wan transformers' rotary embedding, "
                            f"not {architecture}; set RIFLEx_setting to 2 (off)")


def _check_windows(params: GenerationParams, architecture: str, window: int) -> None:
    prefix = f"params.sliding_window_size {window}: video_length {params.video_length} needs several windows"
    continuation = continuation_for(architecture)
    if continuation is None:
        able = " and ".join(CONTINUATIONS)
        raise InvalidParams(f"{prefix}; only {able} models continue a video from its last frames, {architecture} "
                            f"cannot (WanGP's text-to-video windows are not connected to each other): ask for at "
                            f"most {window} frames or use a VACE or image-to-video model")
    usable = valid_frame_count(window, toward="down")
    overlap, discard = overlap_for(params, architecture), params.sliding_window_discard_last_frames
    if overlap < 1 or overlap + discard >= usable:
        raise InvalidParams(f"{prefix}; sliding_window_overlap {overlap} (at least 1) plus "
                            f"sliding_window_discard_last_frames {discard} must leave new frames in a window of "
                            f"{usable}")
    for name, value in (("video_guide2", params.video_guide2), ("batch_size", params.batch_size > 1),
                        ("image_end", params.image_end)):
        if value:
            raise InvalidParams(f"{prefix}; {name} is not supported with sliding windows")
    if params.sliding_window_overlap_noise > 0 and not continuation.takes_overlap_noise:
        raise InvalidParams(f"params.sliding_window_overlap_noise {params.sliding_window_overlap_noise:g}: noise "
                            f"on the overlapped frames goes into VACE's guide; {architecture} continues from its "
                            f"start image instead: set it to 0")
