"""``tasks``: submit and inspect rows without writing SQL (``python -m source.task_cli``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import structlog

from source.cli_options import with_store_config
from source.db import NewTask, StoreConfig, StoreConfigError, TaskStatus, TaskStore, open_store
from source.db.config import StoreUnavailable
from source.db.models import Task, TaskRejected
from source.logging_utils import configure_logging
from source.routing import known_task_types

log = structlog.get_logger(__name__)


def _open(config: StoreConfig) -> TaskStore:
    try:
        store = open_store(config)
    except StoreConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        store.migrate()
    except StoreUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    return store


def _load_params(text: str) -> dict[str, Any]:
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise click.BadParameter(f"params file {path} does not exist", param_hint="PARAMS")
        text = path.read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="PARAMS") from None
    if not isinstance(value, dict):
        raise click.BadParameter("params must be a JSON object", param_hint="PARAMS")
    return value


class _OneLineErrors(click.Group):
    """Bad input ends with one line and exit status 1, never a traceback (the traceback goes to the debug log)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except TaskRejected as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            log.debug("command_failed", exc_info=exc)
            first_line = (str(exc).strip().splitlines() or [""])[0][:500]
            raise click.ClickException(f"{type(exc).__name__}: {first_line}") from None


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default="auto", show_default=True)
def cli(log_format: str) -> None:
    """Submit and inspect worker tasks (same store flags as worker.py)."""
    # Logs go to stderr so `id=$(tasks add ...)` captures only the id.
    configure_logging(log_format)


@cli.command()
@with_store_config
@click.argument("task_type")
@click.argument("params", default="{}")
@click.option("--id", "task_id", default=None, help="Row id (default: a new uuid4).")
@click.option("--dependant-on", default=None, help="Run only after this task is Complete.")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option("--project-id", default=None)
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True)
def add(config: StoreConfig, task_type: str, params: str, task_id: str | None, dependant_on: str | None,
        priority: int, project_id: str | None, max_attempts: int) -> None:
    """Queue a task. PARAMS is a JSON object or @file.json."""
    if task_type not in known_task_types():
        click.echo(f"warning: {task_type!r} is not a known task type; a worker will fail it", err=True)
    task = NewTask(task_type=task_type, params=_load_params(params), id=task_id, dependant_on=dependant_on,
                   priority=priority, project_id=project_id, max_attempts=max_attempts)
    store = _open(config)
    if dependant_on is not None and store.get_task(dependant_on) is None:
        raise click.ClickException(f"dependency {dependant_on} does not exist")
    if task_id is not None and store.get_task(task_id) is not None:
        raise click.ClickException(f"task id {task_id} already exists")
    click.echo(store.add_task(task))


@cli.command(name="list")
@with_store_config
@click.option("--status", type=click.Choice([s.value for s in TaskStatus]), default=None)
@click.option("--type", "task_type", default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(config: StoreConfig, status: str | None, task_type: str | None, limit: int, as_json: bool) -> None:
    """List tasks, newest first."""
    tasks = _open(config).list_tasks(status=TaskStatus(status) if status else None, task_type=task_type, limit=limit)
    for task in tasks:
        if as_json:
            click.echo(json.dumps(_row(task), default=str))
        else:
            progress = f"{task.progress:.0%}" if task.progress is not None else ""
            click.echo(f"{task.id}  {task.status.value:<11}  {task.task_type:<28} p={task.priority:<3} "
                       f"{progress:>4}  {task.created_at or ''}  {task.output_location or task.error_message or ''}")


@cli.command()
@with_store_config
@click.argument("task_id")
def show(config: StoreConfig, task_id: str) -> None:
    """Show a whole row, params pretty-printed."""
    task = _open(config).get_task(task_id)
    if task is None:
        raise click.ClickException(f"no task {task_id}")
    click.echo(json.dumps(_row(task), indent=2, default=str))


@cli.command()
@with_store_config
@click.argument("task_id")
def cancel(config: StoreConfig, task_id: str) -> None:
    """Cancel a queued or running task (a running one stops at its next step)."""
    store = _open(config)
    if not store.cancel_task(task_id):
        raise click.ClickException(_not_in_state(store, task_id, "cancelled", "Queued or In Progress"))
    click.echo(f"cancelled {task_id}")


@cli.command()
@with_store_config
@click.argument("task_id")
def retry(config: StoreConfig, task_id: str) -> None:
    """Queue a Failed or Cancelled task again, attempts reset."""
    store = _open(config)
    if not store.retry_task(task_id):
        raise click.ClickException(_not_in_state(store, task_id, "retried", "Failed or Cancelled"))
    click.echo(f"requeued {task_id}")


@cli.command()
@with_store_config
@click.option("--json", "as_json", is_flag=True)
def stats(config: StoreConfig, as_json: bool) -> None:
    """Counts by status and by worker."""
    result = _open(config).stats()
    # A status no worker looks for ('queued', ...) is shown, not hidden: such rows never run.
    unknown = {status: n for status, n in result.by_status.items() if status not in {s.value for s in TaskStatus}}
    if as_json:
        click.echo(json.dumps({"by_status": result.by_status, "by_worker": result.by_worker,
                               "unknown_statuses": unknown}))
        return
    click.echo("by status:")
    for status in TaskStatus:
        click.echo(f"  {status.value:<12} {result.by_status.get(status.value, 0)}")
    for status, count in sorted(unknown.items()):
        click.echo(f"  unknown status {status!r}: {count} (never claimed; the worker's sweep fails such rows)")
    click.echo("by worker:")
    for worker, counts in sorted(result.by_worker.items()):
        click.echo(f"  {worker}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))


@cli.command()
@with_store_config
@click.option("--alive-within", type=float, default=120.0, show_default=True,
              help="A running worker heard from within this many seconds counts as alive.")
@click.option("--json", "as_json", is_flag=True)
def workers(config: StoreConfig, alive_within: float, as_json: bool) -> None:
    """Live and dead workers: host, GPU, resident model, current task, last heartbeat."""
    for record in _open(config).list_workers(alive_within_seconds=alive_within):
        if as_json:
            click.echo(json.dumps(record.__dict__, default=str))
            continue
        state = "alive" if record.alive else ("stopped" if record.status == "stopped" else "DEAD")
        gpu = f"{record.gpu_name} {record.gpu_memory_gb} GiB" if record.gpu_name else "no GPU"
        click.echo(f"{record.id:<28} {state:<7} {record.host or ''}:{record.pid or ''}  {gpu}  "
                   f"model={record.resident_model or '-'} task={record.current_task_id or '-'} "
                   f"last={record.last_heartbeat}{_queue_summary(record.stats)}")


def _not_in_state(store: TaskStore, task_id: str, verb: str, states: str) -> str:
    task = store.get_task(task_id)
    if task is None:
        return f"no task {task_id}"
    return f"task {task_id} is {task.status.value}: it is not {states}, so it cannot be {verb}"


def _queue_summary(stats: dict[str, Any] | None) -> str:
    if not stats:
        return ""
    return (f"  generated={stats.get('tasks_completed', 0)} failed={stats.get('tasks_failed', 0)} "
            f"cancelled={stats.get('tasks_cancelled', 0)} loads={stats.get('model_loads', 0)} "
            f"switches={stats.get('model_switches', 0)} gen_s={stats.get('total_generation_time', 0):.1f}")


def _row(task: Task) -> dict[str, Any]:
    try:
        params: Any = task.params()
    except Exception:
        params = task.params_json
    return {
        "id": task.id, "task_type": task.task_type, "status": task.status.value, "params": params,
        "dependant_on": task.dependant_on, "project_id": task.project_id, "priority": task.priority,
        "attempts": task.attempts, "max_attempts": task.max_attempts, "worker_id": task.worker_id,
        "created_at": task.created_at, "updated_at": task.updated_at,
        "generation_started_at": task.generation_started_at,
        "generation_processed_at": task.generation_processed_at, "lease_expires_at": task.lease_expires_at,
        "heartbeat_at": task.heartbeat_at, "progress": task.progress, "output_location": task.output_location,
        "error_message": task.error_message, "result": task.result,
        "parent_task_id": task.parent_task_id, "child_key": task.child_key,
        "awaiting_children": task.awaiting_children,
        # what is wrong with the row as stored (undecodable text, wrong column types), if anything
        "row_problems": list(task.problems),
    }


if __name__ == "__main__":
    cli()
