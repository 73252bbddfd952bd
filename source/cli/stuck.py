"""Queued rows that no live worker can run (their task type or model is outside every live worker's capabilities),
each kind with the reason, for `tasks stats` and `tasks list --stuck`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from source.db.models import QueuedKind, WorkerRecord
from source.routing import default_model

SHOWN_NAMES = 6


@dataclass(frozen=True)
class StuckKind:
    kind: QueuedKind
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"task_type": self.kind.task_type, "model": self.kind.model, "count": self.kind.count,
                "oldest": self.kind.oldest, "reason": self.reason}


def stuck_kinds(kinds: Sequence[QueuedKind], workers: Sequence[WorkerRecord],
                known_models: Sequence[str] = ()) -> list[StuckKind]:
    """The kinds of Queued rows no live worker accepts (Capabilities.accepts, the claim's own rule)."""
    live = [w for w in workers if w.alive]
    stuck = []
    for kind in kinds:
        if any(w.capabilities.accepts(kind.task_type, kind.model) for w in live):
            continue
        stuck.append(StuckKind(kind, _reason(kind, live, known_models)))
    return stuck


def _reason(kind: QueuedKind, live: Sequence[WorkerRecord], known_models: Sequence[str]) -> str:
    if not live:
        return "no live worker"
    if kind.model is None:
        default = default_model(kind.task_type)
        needs = f" (it runs the default model {default!r})" if default else ""
        return (f"no live worker accepts task type {kind.task_type!r} without params.model{needs}: {_count(live)} "
                f"take such rows of task types {_names(w.capabilities.modelless_task_types for w in live)}"
                f"{_memory(live)}")
    takers = [w for w in live if w.capabilities.task_types is None or kind.task_type in w.capabilities.task_types]
    if not takers:
        return (f"no live worker accepts task type {kind.task_type!r}: {_count(live)} take task types "
                f"{_names(w.capabilities.task_types for w in live)}")
    unknown = f" (no definition named {kind.model!r} exists)" if known_models and kind.model not in known_models else ""
    return (f"no live worker accepts model {kind.model!r}{unknown}: {_count(takers)} taking {kind.task_type!r} "
            f"take models {_names(w.capabilities.models for w in takers)}{_memory(takers)}")


def _count(workers: Sequence[WorkerRecord]) -> str:
    return f"{len(workers)} live worker{'s' if len(workers) != 1 else ''}"


def _names(lists: object) -> str:
    names: list[str] = []
    for items in lists:  # type: ignore[attr-defined]
        if items is None:
            return "any"
        names.extend(name for name in items if name not in names)
    if not names:
        return "none"
    shown = ", ".join(names[:SHOWN_NAMES])
    return shown + (f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else "")


def _memory(live: Sequence[WorkerRecord]) -> str:
    sizes = sorted({w.gpu_memory_gb for w in live if w.gpu_memory_gb is not None})
    return f"; GPU memory {', '.join(f'{size:g}' for size in sizes)} GiB" if sizes else ""
