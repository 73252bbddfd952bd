"""What this worker may claim: ``--task-types``, ``--models`` (globs over the model definitions) and, by default,
only the models whose declared memory need at their active profile fits the GPU it detected. Turned once, at
start, into the concrete lists the claim takes (``Capabilities``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from source.db.models import UNRESTRICTED, Capabilities
from source.engine.loading.inventory import memory_need_gb
from source.engine.model_defs import BoxOptions, list_model_types, load_model_def
from source.errors import DefinitionError, InvalidParams
from source.routing import default_model, known_task_types
from source.task_types import MODEL_ALIASES


class CapabilityError(ValueError):
    """A --task-types / --models value that names nothing this worker could run; the message says why."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


@dataclass(frozen=True)
class ModelFit:
    """One definition against this box's GPU: its need at its active profile (None: not bounded)."""

    model_type: str
    need_gb: float | None
    profile: int

    def fits(self, gpu_gb: float | None) -> bool:
        return gpu_gb is None or self.need_gb is None or self.need_gb <= gpu_gb


def model_fits(box: BoxOptions | None = None) -> list[ModelFit]:
    """Every loadable definition with its memory need at this box's profile (a malformed one can run nowhere:
    left out)."""
    fits = []
    for model_type in list_model_types():
        try:
            definition = load_model_def(model_type, box)
        except (InvalidParams, DefinitionError):
            continue
        fits.append(ModelFit(model_type, memory_need_gb(definition), definition.engine.profile))
    return fits


def parse_list(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """A flag given several times and/or comma-separated (``--models 't2v*,flux'``); None when not given."""
    if text is None:
        return None
    parts = [text] if isinstance(text, str) else list(text)
    items = tuple(item.strip() for part in parts for item in part.split(",") if item.strip())
    return items or None


def resolve_capabilities(
    task_types: Sequence[str] | None,
    model_patterns: Sequence[str] | None,
    gpu_memory_gb: float | None,
    *,
    allow_unknown_task_types: bool = False,
    fits: Sequence[ModelFit] | None = None,
    box: BoxOptions | None = None,
) -> Capabilities:
    """The claim's three lists. No flag and nothing the GPU excludes: unrestricted (today's claim, unchanged).
    ``gpu_memory_gb`` None (no GPU found): no memory filter."""
    fits = model_fits(box) if fits is None else list(fits)
    types = _checked_task_types(task_types, allow_unknown_task_types)
    known = [fit.model_type for fit in fits]
    chosen = [fit for fit in fits if model_patterns is None or any(fnmatchcase(fit.model_type, p) for p in model_patterns)]
    for pattern in model_patterns or ():
        matched = [fit for fit in chosen if fnmatchcase(fit.model_type, pattern)]
        if not matched:
            raise CapabilityError("--models", f"{pattern!r} matches no model definition; known: {', '.join(known)}")
        if not any(fit.fits(gpu_memory_gb) for fit in matched):
            needs = ", ".join(f"{fit.model_type} ~{fit.need_gb:g} GiB at profile {fit.profile}" for fit in matched)
            raise CapabilityError("--models", f"{pattern!r}: none fits this GPU's {gpu_memory_gb:g} GiB ({needs}); "
                                              "a lower-memory profile (--wgp-profile 2 or 4) changes the need")
    allowed = [fit.model_type for fit in chosen if fit.fits(gpu_memory_gb)]
    aliases = [alias for alias, model in MODEL_ALIASES.items() if model in allowed]
    models = None if model_patterns is None and len(allowed) == len(fits) else tuple(allowed + aliases)
    if types is None and models is None:
        return UNRESTRICTED
    candidates = types if types is not None else tuple(known_task_types())
    modelless = tuple(t for t in candidates
                      if models is None or (default := default_model(t)) is None or default in models)
    return Capabilities(task_types=types, models=models, modelless_task_types=modelless)


def _checked_task_types(task_types: Sequence[str] | None, allow_unknown: bool) -> tuple[str, ...] | None:
    if task_types is None:
        return None
    known = known_task_types()
    unknown = [t for t in task_types if t not in known]
    if unknown and not allow_unknown:
        raise CapabilityError("--task-types", f"unknown task type(s) {', '.join(map(repr, unknown))}; known: "
                                              f"{', '.join(known)} (--legacy-unknown-task-types allows others)")
    return tuple(dict.fromkeys(task_types))

