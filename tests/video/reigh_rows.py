"""Rows as Reigh's create-task resolvers build them (supabase/functions/create-task/resolvers/*.ts), written
out in Python: the shapes and defaults a user's click produces, so the tests send what production sends."""

from __future__ import annotations

import uuid
from typing import Any

# joinClips.ts TASK_DEFAULTS (model swapped for a tiny one by the tests that generate)
JOIN_DEFAULTS = {"prompt": "", "gap_frame_count": 23, "context_frame_count": 15, "replace_mode": True,
                 "enhance_prompt": False, "model": "wan_2_2_vace_lightning_baseline_2_2_2",
                 "num_inference_steps": 6, "guidance_scale": 3.0, "seed": -1, "negative_prompt": "",
                 "priority": 0, "motion_mode": "basic", "selected_phase_preset_id": "__builtin_vace_default__"}


_LIGHTNING = "https://huggingface.co/lightx2v/Wan2.2-Lightning/resolve/main/Wan2.2-T2V-A14B-4steps-lora-250928"
DEFAULT_VACE_PHASE_CONFIG = {
    "num_phases": 3, "steps_per_phase": [2, 2, 5], "flow_shift": 5.0, "sample_solver": "euler",
    "model_switch_phase": 2, "mode": "vace",
    "phases": [{"phase": 1, "guidance_scale": 3.0, "loras": [{"url": f"{_LIGHTNING}/high_noise_model.safetensors",
                                                              "multiplier": "0.75"}]},
               {"phase": 2, "guidance_scale": 1.0, "loras": [{"url": f"{_LIGHTNING}/high_noise_model.safetensors",
                                                              "multiplier": "1.0"}]},
               {"phase": 3, "guidance_scale": 1.0, "loras": [{"url": f"{_LIGHTNING}/low_noise_model.safetensors",
                                                              "multiplier": "1.0"}]}],
}


_LIGHTNING = "https://huggingface.co/lightx2v/Wan2.2-Lightning/resolve/main/Wan2.2-T2V-A14B-4steps-lora-250928"
DEFAULT_VACE_PHASE_CONFIG = {
    "num_phases": 3, "steps_per_phase": [2, 2, 5], "flow_shift": 5.0, "sample_solver": "euler",
    "model_switch_phase": 2, "mode": "vace",
    "phases": [{"phase": 1, "guidance_scale": 3.0, "loras": [{"url": f"{_LIGHTNING}/high_noise_model.safetensors",
                                                              "multiplier": "0.75"}]},
               {"phase": 2, "guidance_scale": 1.0, "loras": [{"url": f"{_LIGHTNING}/high_noise_model.safetensors",
                                                              "multiplier": "1.0"}]},
               {"phase": 3, "guidance_scale": 1.0, "loras": [{"url": f"{_LIGHTNING}/low_noise_model.safetensors",
                                                              "multiplier": "1.0"}]}],
}


def _contract(family: str, run_id: str, **extra: Any) -> dict[str, Any]:
    return {"contract_version": 3, "task_family": family, "run_id": run_id, **extra}


def crossfade_join(clip_urls: list[str], overlaps: list[int], *, audio_url: str | None = None,
                   shot_id: str = "shot-1") -> dict[str, Any]:
    """crossfadeJoin.ts: a travel_stitch row with clip_urls (frontend-created join)."""
    run_id = uuid.uuid4().hex[:12]
    audio = {"audio_url": audio_url} if audio_url else {}
    return {"shot_id": shot_id, "clip_urls": clip_urls, "frame_overlap_settings_expanded": overlaps,
            "full_orchestrator_payload": {"run_id": run_id, "shot_id": shot_id, "clip_urls": clip_urls,
                                          "frame_overlap_settings_expanded": overlaps, **audio},
            "orchestration_contract": _contract("join_clips", run_id, shot_id=shot_id,
                                                generation_routing="variant_parent"),
            **audio}


def join_clips(clips: list[str], *, video_edit: dict[str, Any] | None = None, **inputs: Any) -> dict[str, Any]:
    """joinClips.ts: a join_clips_orchestrator row; ``inputs`` are the request's optional fields."""
    run_id = inputs.pop("run_id", None) or uuid.uuid4().hex[:12]
    per_join = inputs.pop("per_join_settings", None)
    details: dict[str, Any] = {
        "orchestrator_task_id": f"join_clips_orchestrator_{uuid.uuid4().hex[:8]}",
        "clip_list": [{"url": url} for url in clips], "run_id": run_id,
        **{key: inputs.pop(key, default) for key, default in JOIN_DEFAULTS.items()},
        "keep_bridging_images": inputs.pop("keep_bridging_images", None),
        "parent_generation_id": None, "advanced_mode": True,
        # joinClips.ts sends the request's phase_config or its default 3-phase Lightning config, whose LoRAs
        # are hub URLs; a test passes phase_config=None (left out) as nothing can be downloaded here.
        "phase_config": inputs.pop("phase_config", DEFAULT_VACE_PHASE_CONFIG),
    }
    for key in ("resolution", "fps", "use_input_video_resolution", "use_input_video_fps", "audio_url",
                "vid2vid_init_strength", "loop_first_clip", "additional_loras", "use_parallel_joins"):
        if key in inputs:
            details[key] = inputs.pop(key)
    if video_edit:
        details.update(video_edit_mode=True, **video_edit)
    if per_join:
        details["per_join_settings"] = per_join
    assert not inputs, f"not a joinClips.ts input: {sorted(inputs)}"
    details = {k: v for k, v in details.items() if v is not None}  # JSON.stringify drops undefined
    return {**details, "contract_version": 1, "task_family": "join_clips", "orchestrator_details": details,
            "orchestration_contract": _contract("join_clips", run_id, generation_routing="orchestrator",
                                                sibling_lookup="run_id"),
            "task_view_contract": {"contract_version": 1, "input_images": clips},
            "family_contract": {"contract_version": 1, "mode": "video_edit_join" if video_edit else "multi_clip_join",
                                "run_id": run_id, "clips": clips, "overrides_count": len(per_join or []),
                                "has_audio": "audio_url" in details}}


def edit_video(orchestrator_details: dict[str, Any]) -> dict[str, Any]:
    """editVideoOrchestrator.ts: the app's orchestrator_details passed through."""
    return {"orchestrator_details": orchestrator_details, "tool_type": "edit-video"}


def video_enhance(video_url: str, *, enable_interpolation: bool, enable_upscale: bool,
                  interpolation: dict[str, Any] | None = None, upscale: dict[str, Any] | None = None) -> dict[str, Any]:
    """videoEnhance.ts with its defaults (DEFAULT_FILM_PARAMS, DEFAULT_FLASHVSR_PARAMS)."""
    payload: dict[str, Any] = {"tool_type": "video-enhance", "video_url": video_url,
                               "enable_interpolation": enable_interpolation, "enable_upscale": enable_upscale}
    if enable_interpolation:
        given = interpolation or {}
        payload["interpolation"] = {"num_frames": given.get("num_frames", 1),
                                    "use_calculated_fps": given.get("use_calculated_fps", True),
                                    "video_quality": given.get("video_quality", "high"),
                                    **{k: v for k, v in given.items()
                                       if k not in ("num_frames", "use_calculated_fps", "video_quality")}}
    if enable_upscale:
        given = upscale or {}
        payload["upscale"] = {"upscale_factor": given.get("upscale_factor", 2), "color_fix": given.get("color_fix", True),
                              "output_quality": given.get("output_quality", "high"),
                              **{k: v for k, v in given.items()
                                 if k not in ("upscale_factor", "color_fix", "output_quality")}}
    return payload
