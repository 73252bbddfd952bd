"""What every orchestrator does once its inputs are valid: insert its chain of children (idempotently)
and hand the row back to the worker to be parked until the last child completes it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from source.db.models import NewTask, TaskStatus, child_task_id
from source.errors import InvalidParams, TaskError
from source.handlers.context import TaskContext, TaskOutcome
from source.handlers.task_params import TaskParams

PREVIOUS = "<previous>"


@dataclass(frozen=True)
class ChildSpec:
    key: str  # unique among the parent's children; the child's id is derived from it
    task_type: str
    params: dict[str, Any] = field(default_factory=dict)
    # The sibling (by key) this child waits for: the one before it by default, None for none (runs at once).
    after: str | None = PREVIOUS


def child_payload(params: TaskParams) -> dict[str, Any]:
    """A child row's params from its one schema (the model its handler parses), unset values left out: the
    payload cannot drift from what the child reads."""
    return params.model_dump(mode="json", exclude_none=True)


def child_id(ctx: TaskContext, key: str) -> str:
    """The id a child of this row has (or will have): payloads may name their siblings by it."""
    return child_task_id(ctx.task.id, key)


def spawn_chain(ctx: TaskContext, specs: Sequence[ChildSpec], *, result: dict[str, Any] | None = None,
                priority: int | None = None) -> TaskOutcome:
    """Insert the children, each depending on the one before (or on the sibling its spec names, or on none),
    and park the orchestrator; the last spec is the one that completes it. Running again (after a crash or a
    reset) inserts nothing new; if the chain already finished, so does the row. ``priority``: the children's
    (default the parent's)."""
    parent = ctx.task
    check_child_count(ctx, len(specs))
    children, previous = [], None
    for spec in specs:
        after = previous if spec.after == PREVIOUS else (child_id(ctx, spec.after) if spec.after else None)
        children.append(NewTask(spec.task_type, spec.params, dependant_on=after,
                                priority=parent.priority if priority is None else priority,
                                project_id=parent.project_id, child_key=spec.key))
        previous = child_id(ctx, spec.key)
    ids = ctx.store.add_child_tasks(parent.id, children)
    summary = {**(result or {}), "child_task_ids": ids}
    ctx.log.info("children_created", children=len(ids), final_child=ids[-1])
    final = ctx.linked_task(ids[-1])
    if final is not None and final.status is TaskStatus.COMPLETE and final.output_location:
        ctx.store.complete_parent(parent.id, output_location=final.output_location, result=summary)
    elif final is not None and final.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        raise TaskError(f"child {final.task_type} {final.id} already ended {final.status.value}: {final.error_message}")
    return TaskOutcome(result=summary, awaiting_children=True)


def check_child_count(ctx: TaskContext, count: int) -> None:
    """One row must not fan out into thousands: refuse before anything is inserted (or downloaded)."""
    limit = ctx.settings.max_children_per_task
    if count > limit:
        raise InvalidParams(f"this {ctx.task.task_type} would create {count} child tasks; one task may create at "
                            f"most {limit} (worker option --max-children-per-task)")


def dependency_output(ctx: TaskContext, task_id: str | None, what: str) -> str:
    """The output_location of a finished row this task depends on."""
    row = ctx.linked_task(task_id)
    if row is None:
        raise TaskError(f"{what}: task {task_id} does not exist")
    if row.status is not TaskStatus.COMPLETE or not row.output_location:
        raise TaskError(f"{what}: task {task_id} is {row.status.value} with no output")
    return ctx.output_of(row.output_location)
