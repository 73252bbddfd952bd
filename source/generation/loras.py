"""Every LoRA a generation task asks for, made into files in the model's LoRA folder.

``process_all_loras`` merges three sources into the engine's ``activated_loras`` /
``loras_multipliers``:

1. ``activated_loras`` + ``loras_multipliers``: names already in ``loras/<family>/``;
2. ``additional_loras`` ``{url_or_path: multiplier}``: Hugging Face URLs through huggingface_hub's
   cache, other https URLs through the input policy's downloader, local files under the input roots.
   Each is copied into the content-addressed LoRA cache (``<sha256>.safetensors``, checked to be a LoRA
   of the family first) and activated as ``sha256:<digest>``: a row never writes, replaces or links a
   file under a name that ``activated_loras`` or an acceleration flag resolves;
3. the acceleration/reward LoRAs switched on by ``use_causvid_lora``, ``use_lighti2x_lora`` and
   ``apply_reward_lora`` (table below), with their recommended step/guidance settings applied where the
   task did not set those itself.

Names are deduplicated (first mention wins). The engine loads the result for one call only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import structlog

from source.engine.loras import CACHED_LORA, LORA_SUFFIXES, cached_lora, cached_lora_name, check_lora_file
from source.engine.params import LoraWeight, pair_loras, parse_multipliers
from source.engine.paths import lora_cache_dir
from source.errors import InputUnavailable, InvalidParams, ModelUnavailable
from source.generation.conversion import GenerationTask
from source.hub import fetch_hub_file
from source.task_files.fetch import download, is_url
from source.task_files.policy import TaskInputs

log = structlog.get_logger(__name__)

MAX_LORA_BYTES = 4 * 2**30
DEFAULT_CACHE_BUDGET_BYTES = 20 * 2**30  # WGP_LORA_CACHE_BYTES overrides; least recently used go first
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
    """``style``, ``style.safetensors`` and a cached copy of a ``style.safetensors`` name the same LoRA."""
    cached = CACHED_LORA.fullmatch(name)
    if cached:
        name = name.split(":", 2)[2] if name.count(":") >= 2 else name
    path = Path(name)
    return path.stem if path.suffix.lower() in LORA_SUFFIXES else name


def process_all_loras(task: GenerationTask, lora_dir: Path, inputs: TaskInputs | None = None) -> GenerationTask:
    """The task with every requested LoRA present (in ``lora_dir`` or the LoRA cache) and named in its
    parameters. ``inputs``: the policy raw ``additional_loras`` sources are fetched under (the default
    one, public URLs and files under the working directory, when the caller gives none)."""
    params = dict(task.parameters)
    selection = _Selection([], [])
    for name, multiplier in pair_loras(params.get("activated_loras") or (), params.get("loras_multipliers") or ()):
        selection.add(name, multiplier, "activated_loras")

    for source, multiplier in task.additional_loras.items():
        selection.add(fetch_lora(source, lora_dir, inputs), multiplier, "additional_loras")

    params.update(recommended_settings(task))
    for key in task.acceleration_loras:
        spec = ACCELERATION_LORAS[key]
        selection.add(fetch_known_lora(spec, lora_dir).name, (float(spec.multiplier),), spec.flag)
        log.info("acceleration_lora", lora=key, settings={k: params[k] for k in spec.recommended})

    if not selection.names:
        return task
    params["activated_loras"] = tuple(selection.names)
    params["loras_multipliers"] = tuple(selection.multipliers)
    return replace(task, parameters=MappingProxyType(params))


def recommended_settings(task: GenerationTask) -> dict[str, Any]:
    """The settings the task's acceleration LoRAs recommend, for those the task does not set itself (known
    before any LoRA is fetched: the prepare stage checks the work they make)."""
    settings: dict[str, Any] = {}
    for key in task.acceleration_loras:
        for name, value in ACCELERATION_LORAS[key].recommended.items():
            if name not in task.parameters:
                settings[name] = value
    return settings


def with_model_phase_loras(task: GenerationTask, phase_loras: tuple[tuple[str, str], ...]) -> GenerationTask:
    """The task with its model definition's phase LoRAs (hub URLs fetched as additional_loras, names from the
    LoRA folder) ahead of its own, unless the row's phase_config replaced them."""
    if not task.model_phase_loras or not phase_loras:
        return task
    params = dict(task.parameters)
    own = pair_loras(params.get("activated_loras") or (), params.get("loras_multipliers") or ())
    named = [(source, parse_multipliers("phase_loras", [multiplier])[0]) for source, multiplier in phase_loras
             if not is_url(source)]
    fetched = {source: parse_multipliers("phase_loras", [multiplier])[0] for source, multiplier in phase_loras
               if is_url(source)}
    if named:
        params["activated_loras"] = tuple(name for name, _ in (*named, *own))
        params["loras_multipliers"] = tuple(weight for _, weight in (*named, *own))
    return replace(task, parameters=MappingProxyType(params),
                   additional_loras=MappingProxyType({**fetched, **task.additional_loras}))


def fetch_lora(source: str, lora_dir: Path, inputs: TaskInputs | None = None) -> str:
    """The name (``sha256:<digest>:<file>``) of the LoRA that ``source`` (a URL, a path or an already
    cached name) holds, copied into the LoRA cache after checking it is a LoRA of ``lora_dir``'s family."""
    if not isinstance(source, str) or not source.strip():
        raise InvalidParams(f"params.additional_loras: {source!r} is not a URL or a path")
    source = source.strip()
    if cached_lora(source, "params.additional_loras: ") is not None:
        return source
    inputs = inputs or TaskInputs(Path(tempfile.gettempdir()) / "wgp-lora-downloads")
    label = _label(source)
    hub = _HUB_URL.match(source)
    if hub:
        fetched = fetch_hub_file(hub["repo"], hub["file"], what=f"LoRA {source}:", revision=hub["rev"],
                                 max_bytes=MAX_LORA_BYTES)
        log.info("lora_fetched", repo=hub["repo"], file=hub["file"])
        return cached_lora_name(_cache(fetched, lora_dir.name, source), label)
    if is_url(source):
        downloaded = download(source, "additional_loras", inputs, max_bytes=MAX_LORA_BYTES)
        try:
            return cached_lora_name(_cache(downloaded, lora_dir.name, source), label)
        finally:
            downloaded.unlink(missing_ok=True)
    if Path(source).suffix.lower() not in LORA_SUFFIXES:
        raise InvalidParams(f"params.additional_loras: {Path(source).name} is not a .safetensors LoRA")
    try:
        path = inputs.policy.check_local(source, "additional_loras")
    except InputUnavailable as exc:
        raise ModelUnavailable(f"params.additional_loras: LoRA file not found: {Path(source).expanduser()}") from exc
    return cached_lora_name(_cache(path, lora_dir.name, source), label)


def _label(source: str) -> str:
    name = Path(source.split("?", 1)[0].rstrip("/")).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]


def _cache(path: Path, folder: str, source: str) -> str:
    """The sha256 of ``path``'s content, stored as ``<cache>/<sha256>.safetensors`` once it passed the LoRA
    checks. The bytes are copied first and the copy is what gets checked and kept, so a file changed
    while this runs cannot slip past the checks."""
    size = path.stat().st_size
    if size > MAX_LORA_BYTES:
        raise InputUnavailable(f"params.additional_loras: {_label(source)} is {size} bytes; the limit is "
                               f"{MAX_LORA_BYTES}")
    cache = lora_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, temp_name = tempfile.mkstemp(dir=cache, prefix=".incoming-", suffix=".safetensors")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as handle:
            copied = 0
            while chunk := handle.read(2**20):
                copied += len(chunk)
                if copied > MAX_LORA_BYTES:
                    raise InputUnavailable(f"params.additional_loras: {_label(source)} grew past the "
                                           f"{MAX_LORA_BYTES}-byte limit while being read")
                digest.update(chunk)
                out.write(chunk)
        check_lora_file(temp, folder, f"params.additional_loras: {_label(source) or 'the LoRA'}")
        target = cache / f"{digest.hexdigest()}.safetensors"
        if target.is_file():
            os.utime(target)  # most recently used: the last one the budget evicts
        else:
            os.replace(temp, target)
        log.info("lora_cached", sha256=digest.hexdigest(), bytes=copied)
    finally:
        temp.unlink(missing_ok=True)
    _evict(cache, keep=target)
    return digest.hexdigest()


def cache_budget_bytes() -> int:
    return int(os.environ.get("WGP_LORA_CACHE_BYTES", DEFAULT_CACHE_BUDGET_BYTES))


def _evict(cache: Path, keep: Path) -> None:
    """Least recently used cached LoRAs removed until the cache fits its budget (``keep`` never)."""
    files = sorted((p for p in cache.glob("*.safetensors") if p.is_file()), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    budget = cache_budget_bytes()
    for old in files:
        if total <= budget:
            break
        if old != keep:
            total -= old.stat().st_size
            old.unlink(missing_ok=True)
            log.info("lora_cache_evicted", file=old.name)


def fetch_known_lora(spec: AccelerationLora, lora_dir: Path) -> Path:
    """An acceleration LoRA under its shared name: the operator's copy, or the one its table entry names,
    fetched from the hub (never from a row)."""
    local = lora_dir / spec.filename
    if local.is_file():
        return local
    cached = fetch_hub_file(spec.repo_id, spec.filename, what=f"{spec.flag} needs {local}, which is missing; its")
    log.info("lora_fetched", repo=spec.repo_id, file=spec.filename)
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        local.hardlink_to(cached.resolve())
    except FileExistsError:
        pass  # another worker placed it meanwhile; never replaced
    except OSError:
        _copy_new(cached, local)
    return local


def _copy_new(source: Path, target: Path) -> None:
    """``source`` copied to ``target`` unless ``target`` exists: written beside it, then linked into place
    (``link`` never replaces a file, and nobody sees a half-written one)."""
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as handle:
            while chunk := handle.read(2**20):
                out.write(chunk)
        with contextlib.suppress(FileExistsError):
            os.link(temp_name, target)
    finally:
        Path(temp_name).unlink(missing_ok=True)
