"""Model definitions: ``defaults/<model_type>.json`` files, with inheritance, as frozen dataclasses."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from source.engine.paths import defaults_dir
from source.errors import DefinitionError, InvalidParams

# A model type names a file; keeping it to these characters means it can never point outside defaults/.
_MODEL_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_PARENT_KEYS = ("parent", "inherits")
_MERGED_SECTIONS = ("weights", "engine", "settings", "pipeline_kwargs", "task_loras")


@dataclass(frozen=True)
class WeightsSource:
    """Where a pipeline's weights live: exactly one diffusers folder (hub repo, local folder or tiny builder),
    and optionally single-file checkpoints that replace some of its components (source/engine/loading/single_file.py).

    files: component → file or list of files merged (``hf://owner/repo/path`` or a path under the checkpoint
    folder); the folder then only gives those components' configs. ckpts: the same shape, used instead of the
    folder's weights only when every file is already on this box (a WanGP ``ckpts/`` folder), never downloaded.
    loras: LoRAs fused into the experts at load, each ``{"file": ..., "multiplier": ...}`` (WanGP's built-in
    model LoRAs). boundary_ratio: the Wan 2.2 expert switch, for a two-expert model whose config folder has one
    expert. size_gb: the download; memory_gb: every component in memory at the definition's dtype (what profile 1
    keeps on the accelerator); largest_gb: the largest component at that dtype (what model offload must fit).
    """

    repo: str | None = None
    revision: str | None = None
    local: str | None = None
    tiny: str | None = None
    files: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    ckpts: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    loras: tuple[tuple[str, float], ...] = ()
    boundary_ratio: float | None = None
    size_gb: float | None = None
    memory_gb: float | None = None
    largest_gb: float | None = None
    # Not a definition field: this box's checkpoint folder (BoxOptions.ckpts_dir; None: the environment's,
    # paths.ckpts_dir(), read where a file is looked for).
    ckpts_dir: Path | None = None

    def __post_init__(self) -> None:
        for name in ("files", "ckpts"):
            object.__setattr__(self, name, MappingProxyType(_file_map(name, getattr(self, name))))
        loras = []
        for lora in self.loras:
            if isinstance(lora, tuple):
                loras.append(lora)
            elif (isinstance(lora, Mapping) and isinstance(lora.get("file"), str) and set(lora) <= {"file", "multiplier"}
                  and isinstance(lora.get("multiplier", 1.0), int | float)):
                _check_file("weights.loras", lora["file"])
                loras.append((lora["file"], float(lora.get("multiplier", 1.0))))
            else:
                raise InvalidParams(f"weights.loras entries must be {{\"file\": ..., \"multiplier\": ...}}, got {lora!r}")
        object.__setattr__(self, "loras", tuple(loras))

    @property
    def kind(self) -> str:
        """Where the weights come from: ``hub``, ``local``, ``tiny``, or ``single-file`` when files replace them."""
        if self.files:
            return "single-file"
        return "hub" if self.repo else ("local" if self.local else "tiny")

    def describe(self) -> str:
        if self.repo:
            folder = f"{self.repo}@{self.revision}" if self.revision else self.repo
        else:
            folder = f"local folder {self.local}" if self.local else f"tiny:{self.tiny}"
        if not self.files:
            return folder
        names = sorted({name for entry in self.files.values()
                        for name in ((entry,) if isinstance(entry, str) else entry)})
        return f"{', '.join(names)} (configs from {folder})"


_HUB_FILE_RE = re.compile(r"^hf://[^/]+/[^/]+/.+")


def _check_file(where: str, text: object) -> None:
    if not isinstance(text, str) or not text:
        raise InvalidParams(f"{where} must be a file name or a list of them, got {text!r}")
    if text.startswith("hf://") and not _HUB_FILE_RE.match(text):
        raise InvalidParams(f"{where}: {text!r} is not hf://owner/repo/path/to/file")


def _file_map(name: str, value: Mapping[str, Any]) -> dict[str, str | tuple[str, ...]]:
    files = {}
    for component, entry in dict(value).items():
        entries = tuple(entry) if isinstance(entry, list | tuple) else (entry,)
        if not entries:
            raise InvalidParams(f"weights.{name}.{component} must be a file name or a list of them")
        for text in entries:
            _check_file(f"weights.{name}.{component}", text)
        files[component] = entries[0] if len(entries) == 1 else entries
    return files


def _attention_backends() -> list[str]:
    from diffusers.models.attention_dispatch import AttentionBackendName

    return [backend.value for backend in AttentionBackendName]


@dataclass(frozen=True)
class EngineOptions:
    """Memory/speed knobs. All but the lossy two keep results within numerical noise of the plain path.

    profile: memory profile 1..5 (source/engine/memory.py). attention: a diffusers attention backend name,
    "auto" (fastest exact kernel on the machine) or null (diffusers' default). batch_cfg: conditional and
    unconditional passes in one batch. compile: regional torch.compile. vae_dtype: the VAE's dtype when it
    differs from the model's. Lossy, opt-in: first_block_cache (a threshold, e.g. 0.05) and fp8 weights.
    """

    profile: int = 1
    attention: str | None = "auto"
    batch_cfg: bool = True
    compile: bool = False
    vae_dtype: str | None = None
    vae_tiling: bool = False
    vae_slicing: bool = False
    first_block_cache: float | None = None
    fp8: bool = False

    def __post_init__(self) -> None:
        if self.first_block_cache is not None and not (
            isinstance(self.first_block_cache, (int, float)) and self.first_block_cache > 0
        ):
            raise InvalidParams(f"engine.first_block_cache must be a threshold > 0, got {self.first_block_cache!r}")
        if self.attention not in (None, "auto") and self.attention not in _attention_backends():
            raise InvalidParams(f"engine.attention {self.attention!r} is not a diffusers attention backend; use "
                                f"\"auto\", null or one of {', '.join(_attention_backends())}")
        if self.vae_dtype not in (None, "bfloat16", "float16", "float32"):
            raise InvalidParams(f"engine.vae_dtype must be bfloat16, float16 or float32, got {self.vae_dtype!r}")


@dataclass(frozen=True)
class ModelDefinition:
    model_type: str
    name: str
    architecture: str
    weights: WeightsSource
    dtype: str = "bfloat16"
    lora_folder: str | None = None
    engine: EngineOptions = field(default_factory=EngineOptions)
    settings: Mapping[str, Any] = field(default_factory=dict)
    # Extra keyword arguments handed to the pipeline call as-is (e.g. a short max_sequence_length for tiny models).
    pipeline_kwargs: Mapping[str, Any] = field(default_factory=dict)
    # WanGP's model-level TeaCache calibration (highest power first), instead of its built-in Wan 2.1 sets
    # (benchmarks/teacache_calibration.py measures one).
    teacache_coefficients: tuple[float, ...] | None = None
    # LoRAs the definition runs its guidance phases with (not fused: each phase sets its own multipliers),
    # e.g. the Lightning accelerators: (hub URL or a name in the LoRA folder, "a;b;c"). A row's phase_config
    # replaces them (source/generation/phase_config.py).
    phase_loras: tuple[tuple[str, str], ...] = ()
    # LoRAs a task type switches on by role (e.g. Qwen's "lightning" accelerator, "inpaint", "style"): role →
    # (hf://owner/repo/file or a file of the LoRA folder, default multiplier). Fetched and applied per call, at
    # the strength the row asks, so one resident model serves every role; a role the definition lacks is not
    # applied (the row's result says so).
    task_loras: Mapping[str, tuple[str, float]] = field(default_factory=dict)


def _task_loras(model_type: str, raw: Any) -> dict[str, tuple[str, float]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise DefinitionError(f"model definition {model_type!r}: task_loras must map a role to a LoRA")
    roles = {}
    for role, entry in raw.items():
        try:
            (file, multiplier), = WeightsSource(loras=(entry,)).loras
        except (InvalidParams, ValueError) as exc:
            raise DefinitionError(f"model definition {model_type!r}: task_loras.{role}: {exc}") from None
        roles[role] = (file, multiplier)
    return roles


def _definition_path(model_type: str) -> Path:
    if not isinstance(model_type, str) or not _MODEL_TYPE_RE.match(model_type):
        raise InvalidParams(f"invalid model_type {model_type!r}")
    path = defaults_dir() / f"{model_type}.json"
    if not path.is_file():
        known = ", ".join(list_model_types()) or "none"
        raise InvalidParams(f"unknown model_type {model_type!r}; known model types: {known}")
    return path


def _raw_definition(model_type: str, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    if model_type in chain:
        raise DefinitionError(f"model definition inheritance loops: {' -> '.join((*chain, model_type))}")
    raw = json.loads(_definition_path(model_type).read_text())
    parent = next((raw.pop(key) for key in _PARENT_KEYS if key in raw), None)
    if parent is None:
        return raw
    merged = _raw_definition(parent, (*chain, model_type))
    for key, value in raw.items():
        if key in _MERGED_SECTIONS and isinstance(value, dict):
            base = dict(merged.get(key) or {})
            # A child pointing its weights elsewhere replaces the whole source, not just one field of it.
            if key == "weights" and {"repo", "local", "tiny"} & value.keys():
                base = {}
            merged[key] = {**base, **value}
        else:
            merged[key] = value
    return merged


# Per-box engine settings (worker.py --wgp-* flags, or these variables): the card in this box decides them,
# so they override every definition's own ``engine``/``dtype`` instead of forking the definitions.
ENGINE_OVERRIDE_ENV = {
    "profile": "WGP_PROFILE",
    "attention": "WGP_ATTENTION_MODE",
    "compile": "WGP_COMPILE",
    "dtype": "WGP_TRANSFORMER_DTYPE_POLICY",
    "vae_dtype": "WGP_VAE_PRECISION",
}
# The older WanGP worker's spellings, kept so its command lines and .env files work unchanged.
_ATTENTION_ALIASES = {"sdpa": "native", "sage2": "sage"}
_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "16": "float16", "fp32": "float32", "32": "float32"}
_TRUE, _FALSE = ("1", "true", "yes", "on", "transformer"), ("0", "false", "no", "off")


def parse_engine_override(key: str, text: str) -> Any:
    """One override value from its flag/env text; InvalidParams naming the variable when it is not valid.
    Returns None for an empty text (WanGP's "" meant "the model's own")."""
    text = text.strip()
    if not text:
        return None
    name = ENGINE_OVERRIDE_ENV[key]
    lowered = text.lower()
    if key == "profile":
        if lowered not in ("1", "2", "3", "4", "5"):
            raise InvalidParams(f"{name} must be a memory profile 1..5, got {text!r}")
        return int(lowered)
    if key == "attention":
        backend = _ATTENTION_ALIASES.get(lowered, lowered)
        if backend != "auto" and backend not in _attention_backends():
            raise InvalidParams(f"{name} {text!r} is not an attention backend; use auto, sdpa, sage, sage2, flash "
                                f"or one of {', '.join(_attention_backends())}")
        return backend
    if key == "compile":
        if lowered not in (*_TRUE, *_FALSE):
            raise InvalidParams(f"{name} must be transformer/true/1 or false/0, got {text!r}")
        return lowered in _TRUE
    dtype = _DTYPE_ALIASES.get(lowered, lowered)
    allowed = ("bfloat16", "float16") if key == "dtype" else ("bfloat16", "float16", "float32")
    if dtype not in allowed:
        raise InvalidParams(f"{name} must be one of {', '.join(allowed)} (or {', '.join(_DTYPE_ALIASES)}), "
                            f"got {text!r}")
    return dtype


def engine_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The per-box overrides set in ``environ`` (the process environment by default), by field name."""
    environ = os.environ if environ is None else environ
    found = {}
    for key, name in ENGINE_OVERRIDE_ENV.items():
        value = parse_engine_override(key, environ.get(name, ""))
        if value is not None:
            found[key] = value
    return found


def _with_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    engine = {k: v for k, v in overrides.items() if k != "dtype"}
    raw = {**raw, "engine": {**(raw.get("engine") or {}), **engine}}
    if "dtype" in overrides:
        raw["dtype"] = overrides["dtype"]
    return raw


@dataclass(frozen=True)
class BoxOptions:
    """This box's engine options: the ``--wgp-*`` overrides (by field name, parsed) and ``--ckpts-dir``. worker.py
    builds them once from its flags and passes them down (Engine, WanOrchestrator, capabilities); a caller that
    passes none gets the environment's (the WGP_* variables), as the WanGP-style surface's users set them."""

    overrides: Mapping[str, Any] = field(default_factory=dict)
    ckpts_dir: Path | None = None


def load_model_def(model_type: str, box: BoxOptions | None = None) -> ModelDefinition:
    raw = _with_overrides(_raw_definition(model_type), engine_overrides() if box is None else box.overrides)
    weights_raw = dict(raw.get("weights", {}))
    if "ckpts_dir" in weights_raw:
        raise DefinitionError(f"model definition {model_type!r}: weights.ckpts_dir is not a definition field "
                              "(the checkpoint folder is the box's: --ckpts-dir / WGP_CKPTS_DIR)")
    if box is not None and box.ckpts_dir is not None:
        weights_raw["ckpts_dir"] = box.ckpts_dir
    try:
        weights = WeightsSource(**weights_raw)
        engine = EngineOptions(**raw.get("engine", {}))
    except (TypeError, InvalidParams) as exc:
        raise DefinitionError(f"model definition {model_type!r} is malformed: {exc}") from exc
    if sum(bool(x) for x in (weights.repo, weights.local, weights.tiny)) != 1:
        raise DefinitionError(f"model definition {model_type!r} must name exactly one of weights.repo/local/tiny")
    if "architecture" not in raw:
        raise DefinitionError(f"model definition {model_type!r} has no architecture")
    coefficients = raw.get("teacache_coefficients")
    if coefficients is not None and not (isinstance(coefficients, list) and coefficients and all(
            isinstance(c, int | float) and not isinstance(c, bool) for c in coefficients)):
        raise DefinitionError(f"model definition {model_type!r}: teacache_coefficients must be a list of numbers, "
                              f"got {coefficients!r}")
    return ModelDefinition(
        phase_loras=_phase_loras(model_type, raw.get("phase_loras") or []),
        model_type=model_type,
        name=raw.get("name", model_type),
        architecture=raw["architecture"],
        weights=weights,
        dtype=raw.get("dtype", "bfloat16"),
        lora_folder=raw.get("lora_folder"),
        engine=engine,
        settings=MappingProxyType(dict(raw.get("settings", {}))),
        pipeline_kwargs=MappingProxyType(dict(raw.get("pipeline_kwargs", {}))),
        teacache_coefficients=tuple(float(c) for c in coefficients) if coefficients else None,
        task_loras=MappingProxyType(_task_loras(model_type, raw.get("task_loras"))),
    )


def _phase_loras(model_type: str, entries: Any) -> tuple[tuple[str, str], ...]:
    loras = []
    for entry in entries if isinstance(entries, list) else [entries]:
        if not (isinstance(entry, Mapping) and set(entry) == {"lora", "multiplier"} and isinstance(entry["lora"], str)
                and isinstance(entry["multiplier"], str | int | float) and not isinstance(entry["multiplier"], bool)):
            raise DefinitionError(f"model definition {model_type!r}: phase_loras entries must be "
                                  f"{{\"lora\": url_or_name, \"multiplier\": \"a;b;c\"}}, got {entry!r}")
        loras.append((entry["lora"], str(entry["multiplier"])))
    return tuple(loras)


def list_model_types() -> list[str]:
    return sorted(p.stem for p in defaults_dir().glob("*.json"))
