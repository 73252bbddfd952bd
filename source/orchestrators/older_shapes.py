"""Child rows in the older Headless-Wan2GP worker's shapes → the payloads our child handlers parse.

The older travel orchestrator queued ``travel_segment``/``travel_stitch`` rows carrying its whole payload
(``full_orchestrator_payload``) plus per-child keys (``segment_index``, ``seed_to_use``, ...); the older
different-perspective orchestrator queued ``dp_final_gen`` with ``dp_orchestrator_payload``. During a rolling
upgrade such rows sit in the same queue as ours, so each is translated here, once, at the handler's edge.
Every older key is used, refused with a message, or listed in ``ignored``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from source.db.models import Task, TaskStatus
from source.db.store import TaskStore
from source.errors import InvalidParams
from source.orchestrators.checks import nearest_frame_count
from source.task_types import OLDER_FINAL_CHILDREN, TASK_TYPES

log = structlog.get_logger(__name__)

# The key that marks each older child shape (our payloads never carry it), from source/task_types.py.
OLDER_MARKS = {t.name: t.older_shape.mark for t in TASK_TYPES if t.older_shape}

# The orchestrator row each older final child finished: the older stitch and dp_final_gen set the row named by
# orchestrator_task_id_ref Complete with the final output (the older worker left it In Progress until then).
OLDER_ORCHESTRATORS = dict(OLDER_FINAL_CHILDREN)


@dataclass(frozen=True)
class Translated:
    params: dict[str, Any]
    ignored: tuple[str, ...] = ()
    # param → {"requested": old, "used": new}: values adjusted the way WanGP adjusts them
    adjusted: dict[str, Any] = field(default_factory=dict)

    def result_extras(self) -> dict[str, Any]:
        extras: dict[str, Any] = {"older_shape": True}
        if self.ignored:
            extras["ignored_params"] = list(self.ignored)
        if self.adjusted:
            extras["adjusted"] = self.adjusted
        return extras


class _Reads:
    """A params object whose reads are remembered, so what nobody read can be reported."""

    def __init__(self, raw: Any, where: str) -> None:
        if not isinstance(raw, Mapping):
            raise InvalidParams(f"{where} must be an object")
        self.raw, self.where, self.read = raw, where, set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        value = self.raw.get(key)
        return default if value is None else value

    def need(self, key: str, hint: str) -> Any:
        value = self.get(key)
        if value is None or value == "":
            raise InvalidParams(f"{self.where}.{key} is required in an older-shape row: {hint}")
        return value

    def unread(self, prefix: str = "") -> list[str]:
        return [f"{prefix}{key}" for key in self.raw if key not in self.read]


def translate_older_child(task_type: str, params: Mapping[str, Any]) -> Translated | None:
    """The current payload for an older-shape child row, or None when the row already has our shape."""
    mark = OLDER_MARKS.get(task_type)
    if mark is None or mark not in params:
        return None
    translated = _TRANSLATORS[task_type](_Reads(params, "params"), _Reads(params[mark], f"params.{mark}"))
    log.info("older_shape_translated", task_type=task_type, ignored=list(translated.ignored),
             adjusted=translated.adjusted)
    return translated


def older_orchestrator_to_complete(store: TaskStore, task: Task, older: Translated | None
                                   ) -> tuple[str | None, dict[str, Any]]:
    """The older orchestrator row this final older-shape child completes (the worker completes it through
    ``complete_parent``, like any parent), and what to add to the child's result. Only a row an older worker
    left waiting qualifies: the orchestrator type of this child, in the same project, In Progress, without a
    lease or children of its own (a row of this version's workers has one or the other). Any other row is
    left as it is, and the child's ``result.older_orchestrator_left`` says why."""
    if older is None:
        return None, {}
    ref = str(older.params["orchestrator_task_id_ref"])
    expected = OLDER_ORCHESTRATORS[task.task_type]
    row = store.get_task(ref)
    if row is None:
        reason = "it does not exist"
    elif row.task_type != expected:
        reason = f"it is a {row.task_type}, not a {expected}"
    elif row.project_id != task.project_id:
        reason = "it belongs to another project"
    elif row.awaiting_children or row.lease_expires_at is not None:
        reason = "a worker of this version holds it (it has a lease or children of its own)"
    elif row.status is not TaskStatus.IN_PROGRESS:
        reason = f"it is {row.status.value}, not In Progress"
    else:
        return ref, {}
    log.info("older_orchestrator_left", task_id=task.id, orchestrator_task_id=ref, reason=reason)
    return None, {"older_orchestrator_left": f"{ref}: {reason}"}


def _frames(name: str, value: Any, adjusted: dict[str, Any]) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise InvalidParams(f"{name} must be a whole number of frames, got {value!r}")
    return nearest_frame_count(name, int(value), adjusted)


def _int(reads: _Reads, key: str, hint: str) -> int:
    value = reads.need(key, hint)
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).lstrip("-").isdigit():
        raise InvalidParams(f"{reads.where}.{key} must be an integer, got {value!r}")
    return int(value)


# -- travel ----------------------------------------------------------------------------------------------
def _travel_ignored(top: _Reads, payload: _Reads) -> tuple[str, ...]:
    """Top-level keys nobody read, and orchestrator keys our travel does not know (what the orchestrator
    itself would report; keys it reads for other children are not this child's to report)."""
    from source.orchestrators.travel_params import TravelDetails

    known = set(TravelDetails.model_fields) | payload.read
    nested = [f"{payload.where.removeprefix('params.')}.{key}" for key in payload.raw if key not in known]
    return tuple(sorted(k for k in top.unread() if k != "full_orchestrator_payload") + sorted(nested))


def _segment(top: _Reads, payload: _Reads) -> Translated:
    index = _int(top, "segment_index", "the 0-based position of this segment in its travel")
    images = payload.need("input_image_paths_resolved", "the travel's keyframe images, in order")
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise InvalidParams(f"{payload.where}.input_image_paths_resolved must be a list of image paths or URLs")
    continuing = payload.get("continue_from_video_resolved_path")
    # The older worker's keyframe choice: a continued video shifts the images by one.
    start_at, end_at = (index - 1, index) if continuing else (index, index + 1)
    if not 0 <= end_at < len(images):
        raise InvalidParams(f"{payload.where}.input_image_paths_resolved has {len(images)} images; segment {index} "
                            f"needs image {end_at} as its end keyframe (send one more image, or fewer segments)")
    adjusted: dict[str, Any] = {}
    frames = top.get("segment_frames_target")
    if frames is None:
        expanded = payload.need("segment_frames_expanded", "the frame count of each segment")
        if not isinstance(expanded, list) or index >= len(expanded):
            raise InvalidParams(f"{payload.where}.segment_frames_expanded has no entry for segment {index}")
        frames = expanded[index]
    guide_video = top.get("continue_from_video_resolved_path_for_guide")
    steps = (top.get("num_inference_steps") or top.get("steps")
             or payload.get("num_inference_steps") or payload.get("steps"))
    params = {
        "orchestrator_task_id_ref": top.need("orchestrator_task_id_ref", "the id of the travel_orchestrator row"),
        "orchestrator_run_id": str(top.need("orchestrator_run_id", "the run id the segments and stitch share")),
        "segment_index": index,
        "is_first_segment": bool(top.get("is_first_segment", index == 0)),
        "is_last_segment": bool(top.get("is_last_segment", False)),
        "segment_frames_target": _frames("params.segment_frames_target", frames, adjusted),
        "frame_overlap_from_previous": top.get("frame_overlap_from_previous", 0),
        "frame_overlap_with_next": top.get("frame_overlap_with_next", 0),
        "base_prompt": top.get("base_prompt", ""),
        "negative_prompt": top.get("negative_prompt", ""),
        "seed": top.get("seed_to_use", payload.get("seed_base", -1)),
        "model": top.get("model_name") or payload.need("model_name", "the VACE model to generate with"),
        "resolution": top.get("parsed_resolution_wh")
        or payload.need("parsed_resolution_wh", "the output size as 'WIDTHxHEIGHT'"),
        "start_image_path": images[start_at] if start_at >= 0 else None,
        "end_image_path": images[end_at],
        "continue_from_video_resolved_path": guide_video if index == 0 else None,
        "num_inference_steps": steps,
        "guidance_scale": payload.get("guidance_scale"),
        "flow_shift": payload.get("flow_shift"),
        "additional_loras": payload.get("additional_loras", {}),
        "use_causvid_lora": bool(top.get("use_causvid_lora") or payload.get("apply_causvid")
                                 or payload.get("use_causvid_lora")),
        "use_lighti2x_lora": bool(top.get("use_lighti2x_lora") or payload.get("use_lighti2x_lora")),
        "apply_reward_lora": bool(top.get("apply_reward_lora") or payload.get("apply_reward_lora")),
        **{key: top.get(key, payload.get(key)) for key in (
            "fade_in_params_json_str", "fade_out_params_json_str", "subsequent_starting_strength_adjustment",
            "desaturate_subsequent_starting_frames", "adjust_brightness_subsequent_starting_frames")},
    }
    if index == 0 and continuing and not params["continue_from_video_resolved_path"]:
        params["continue_from_video_resolved_path"] = continuing
    return Translated({k: v for k, v in params.items() if v is not None}, _travel_ignored(top, payload), adjusted)


def _stitch(top: _Reads, payload: _Reads) -> Translated:
    count = top.get("num_total_segments_generated") or payload.need(
        "num_new_segments_to_generate", "how many segments the travel made")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidParams(f"params.num_total_segments_generated must be a positive integer, got {count!r}")
    overlaps = top.get("frame_overlap_settings_expanded", payload.get("frame_overlap_expanded", []))
    if not isinstance(overlaps, list) or not all(isinstance(o, int) and not isinstance(o, bool) for o in overlaps):
        raise InvalidParams("params.frame_overlap_settings_expanded must be a list of frame counts")
    continued = top.get("initial_continued_video_path") or payload.get("continue_from_video_resolved_path")
    # The overlap each segment was given by the older orchestrator (its segment rows carry the same values).
    into = [overlaps[0] if continued and overlaps else 0]
    into += [overlaps[i - 1] if i - 1 < len(overlaps) else 0 for i in range(1, count)]
    # The older stitch sent the video through upscale_model_name at the larger size; here it is resized with
    # Lanczos (upscale_model_name stays unread, so it is listed in ignored_params).
    upscale = top.get("upscale_factor", payload.get("upscale_factor", 0.0))
    params = {
        "orchestrator_task_id_ref": top.need("orchestrator_task_id_ref", "the id of the travel_orchestrator row"),
        "orchestrator_run_id": str(top.need("orchestrator_run_id", "the run id the segments and stitch share")),
        "num_segments": count,
        "frame_overlaps": into,
        "crossfade_sharp_amt": top.get("crossfade_sharp_amt", payload.get("crossfade_sharp_amt", 0.3)),
        "fps_final_video": top.get("fps_final_video") or payload.get("fps_helpers", 16),
        "resolution": top.get("parsed_resolution_wh")
        or payload.need("parsed_resolution_wh", "the output size as 'WIDTHxHEIGHT'"),
        "continue_from_video_resolved_path": continued,
        "upscale_factor": upscale,
    }
    return Translated({k: v for k, v in params.items() if v is not None}, _travel_ignored(top, payload))


# -- different perspective -------------------------------------------------------------------------------
def _dp_final(top: _Reads, payload: _Reads) -> Translated:
    original = _Reads(payload.need("original_params", "the orchestrator row's params"),
                      f"{payload.where}.original_params")
    ids = _Reads(payload.need("task_ids", "the ids of the run's pose/depth steps"), f"{payload.where}.task_ids")
    adjusted: dict[str, Any] = {}
    seed = original.get("seed", -1)
    params = {
        "orchestrator_task_id_ref": payload.need("orchestrator_task_id", "the id of the orchestrator row"),
        "input_image_path": original.need("input_image_path", "the image to re-pose"),
        "prompt": original.need("prompt", "what the final image shows"),
        "model": original.need("model_name", "the VACE model for the final generation"),
        "resolution": original.need("resolution", "the output size as 'WIDTHxHEIGHT'"),
        # The older final step used seed + 1 (a fixed seed stays reproducible, -1 stays random).
        "seed": seed + 1 if isinstance(seed, int) and seed >= 0 else seed,
        "perspective_type": str(payload.get("perspective_type", original.get("perspective_type", "pose"))).lower(),
        "output_video_frames": _frames("params.output_video_frames", original.get("output_video_frames", 16),
                                       adjusted),
        "use_causvid_lora": bool(original.get("use_causvid_lora", False)),
        "fps_helpers": original.get("fps_helpers", 16),
        "input_perspective_task_id": ids.need("user_persp", "the pose/depth task of the input image"),
        "view_perspective_task_id": ids.need("t2i_persp", "the pose/depth task of the generated view"),
    }
    where = payload.where.removeprefix("params.")
    ignored = [*top.unread(), *(f"{where}.{k}" for k in payload.raw if k not in payload.read),
               *(f"{where}.original_params.{k}" for k in original.unread())]
    ignored = [k for k in ignored if k != "dp_orchestrator_payload"]
    # task_ids of the intermediate steps are bookkeeping; our final step reads only the two perspectives
    return Translated(params, tuple(sorted(ignored)), adjusted)


_TRANSLATORS: dict[str, Callable[[_Reads, _Reads], Translated]] = {
    "travel_segment": _segment,
    "travel_stitch": _stitch,
    "dp_final_gen": _dp_final,
}
