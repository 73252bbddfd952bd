"""Every LoRA a generation task asks for, made into files in the model's LoRA folder.

``process_all_loras`` merges three sources into the engine's ``activated_loras`` /
``loras_multipliers``:

1. ``activated_loras`` + ``loras_multipliers``: names already in ``loras/<family>/``;
2. ``additional_loras`` ``{url_or_path: multiplier}``: Hugging Face URLs through huggingface_hub's
   cache, other https URLs through the size-capped downloader, local files copied in;
3. the acceleration/reward LoRAs switched on by ``use_causvid_lora``, ``use_lighti2x_lora`` and
   ``apply_reward_lora`` (table below), with their recommended step/guidance settings applied where the
   task did not set those itself.

Names are deduplicated (first mention wins). The engine loads the result for one call only.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import structlog

from source.engine.loras import LORA_SUFFIXES
from source.engine.params import LoraWeight, pair_loras
from source.errors import InvalidParams, ModelUnavailable
from source.hub import fetch_hub_file
from source.inputs import download, is_url
from source.task_conversion import GenerationTask

log = structlog.get_logger(__name__)

MAX_LORA_BYTES = 4 * 2**30
_HUB_URL = re.compile(r"^https://(?:www\.)?huggingface\.co/(?P<repo>[^/]+/[^/]+)/(?:resolve|blob)/(?P<rev>[^/]+)/(?P<file>.+)$")


@dataclass(frozen=True)
class AccelerationLora:
    """A known LoRA a task switches on with a flag, and the settings it is meant to run with."""

    flag: str
    filename: str
    repo_id: str
    multiplier: str
    recommended: Mapping[str, Any]


ACCELERATION_LORAS: Mapping[str, AccelerationLora] = MappingProxyType({
    "causvid": AccelerationLora(
        flag="use_causvid_lora", filename="Wan21_CausVid_14B_T2V_lora_rank32.safetensors",
        repo_id="Kijai/WanVideo_comfy", multiplier="0.7",
        recommended={"num_inference_steps": 9, "guidance_scale": 1.0, "flow_shift": 1.0},
    ),
    "lighti2x": AccelerationLora(
        flag="use_lighti2x_lora", filename="Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors",
        repo_id="Kijai/WanVideo_comfy", multiplier="1.0",
        recommended={"num_inference_steps": 6, "guidance_scale": 1.0, "flow_shift": 5.0, "sample_solver": "unipc"},
    ),
    "reward": AccelerationLora(
        flag="apply_reward_lora", filename="Wan2.1-Fun-14B-InP-MPS.safetensors",
        repo_id="alibaba-pai/Wan2.1-Fun-Reward-LoRAs", multiplier="0.5", recommended={},
    ),
})


@dataclass
class _Selection:
    names: list[str]
    multipliers: list[LoraWeight]

    def add(self, name: str, multiplier: LoraWeight, origin: str) -> None:
        if lora_key(name) in {lora_key(known) for known in self.names}:
            log.info("lora_duplicate_ignored", lora=name, origin=origin)
            return
        self.names.append(name)
        self.multipliers.append(multiplier)


def lora_key(name: str) -> str:
    """``style`` and ``style.safetensors`` name the same file."""
    path = Path(name)
    return path.stem if path.suffix.lower() in LORA_SUFFIXES else name


def process_all_loras(task: GenerationTask, lora_dir: Path) -> GenerationTask:
    """The task with every requested LoRA present in ``lora_dir`` and named in its parameters."""
    params = dict(task.parameters)
    selection = _Selection([], [])
    for name, multiplier in pair_loras(params.get("activated_loras") or (), params.get("loras_multipliers") or ()):
        selection.add(name, multiplier, "activated_loras")

    for source, multiplier in task.additional_loras.items():
        selection.add(fetch_lora(source, lora_dir).name, (multiplier,), "additional_loras")

    for key in task.acceleration_loras:
        spec = ACCELERATION_LORAS[key]
        selection.add(fetch_known_lora(spec, lora_dir).name, (float(spec.multiplier),), spec.flag)
        for name, value in spec.recommended.items():
            if name not in task.parameters:
                params[name] = value
        log.info("acceleration_lora", lora=key, settings={k: params[k] for k in spec.recommended})

    if not selection.names:
        return task
    params["activated_loras"] = tuple(selection.names)
    params["loras_multipliers"] = tuple(selection.multipliers)
    return replace(task, parameters=MappingProxyType(params))


def fetch_lora(source: str, lora_dir: Path) -> Path:
    """A LoRA named by URL or path, as a file inside ``lora_dir``."""
    if not isinstance(source, str) or not source.strip():
        raise InvalidParams(f"params.additional_loras: {source!r} is not a URL or a path")
    source = source.strip()
    hub = _HUB_URL.match(source)
    if hub:
        return _from_hub(hub["repo"], hub["file"], lora_dir, revision=hub["rev"], what=f"LoRA {source}:")
    if is_url(source):
        return download(source, "additional_loras", lora_dir, max_bytes=MAX_LORA_BYTES)
    path = Path(source).expanduser()
    if not path.is_file():
        raise ModelUnavailable(f"params.additional_loras: LoRA file not found: {path}")
    if path.suffix.lower() not in LORA_SUFFIXES:
        raise InvalidParams(f"params.additional_loras: {path.name} is not a .safetensors LoRA")
    return _place(path, lora_dir / path.name)


def fetch_known_lora(spec: AccelerationLora, lora_dir: Path) -> Path:
    local = lora_dir / spec.filename
    if local.is_file():
        return local
    return _from_hub(spec.repo_id, spec.filename, lora_dir, what=f"{spec.flag} needs {local}, which is missing; its")


def _from_hub(repo_id: str, filename: str, lora_dir: Path, *, what: str, revision: str | None = None) -> Path:
    target = lora_dir / Path(filename).name
    if target.is_file():
        return target
    cached = fetch_hub_file(repo_id, filename, what=what, revision=revision)
    log.info("lora_fetched", repo=repo_id, file=filename)
    return _place(cached, target)


def _place(source: Path, target: Path) -> Path:
    """Put ``source`` at ``target`` (hard link when possible, else a copy); the engine reads only ``lora_dir``."""
    if source.resolve() == target.resolve():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.hardlink_to(source.resolve())
    except OSError:
        shutil.copyfile(source, target)
    return target
