"""``tasks``: submit and inspect rows without writing SQL (``python -m source.cli.tasks``)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click
import structlog

from source.cli.store_options import run_migrations, store_failure, with_store_config
from source.cli.stuck import StuckKind, stuck_kinds
from source.cli.waiting import wait_until_finished
from source.db import (
    NewTask,
    StoreConfig,
    StoreConfigError,
    TaskStatus,
    TaskStore,
    open_store,
    prepare_schema,
)
from source.db.config import StoreUnavailable
from source.db.models import ALIVE_WITHIN_SECONDS, Capabilities, PurgedTask, Task, TaskRejected
from source.errors import InvalidParams
from source.logging_utils import configure_logging
from source.media.atomic_files import PARTIAL_MARK, is_partial
from source.submission import SubmissionRefused, check_submission
from source.task_files.paths import WORK_FOLDER, task_stem

log = structlog.get_logger(__name__)

# tasks add --wait: the task did not finish within --timeout (as timeout(1) exits).
EXIT_WAIT_TIMED_OUT = 124


def _open(config: StoreConfig, *, check_schema: bool = True) -> TaskStore:
    """The store, its schema checked (never changed: only ``tasks migrate`` migrates a shared database)."""
    if config.access_token:
        raise click.UsageError("a personal access token is for a worker on the user's own GPU; the tasks CLI needs "
                               "the service-role key (SUPABASE_SERVICE_ROLE_KEY) or a direct --db-url")
    if config.reigh_access_token:
        raise click.UsageError("--reigh-access-token is for a worker talking to Reigh's edge functions, which offer "
                               "no listing, cancelling or stats: use Reigh's web app (docs/reigh.md)")
    try:
        store = open_store(config)
    except StoreConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if check_schema:
        try:
            prepare_schema(store, config)
        except StoreUnavailable as exc:
            raise store_failure(exc) from None
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
@click.option("--wait", is_flag=True, help="Wait until the task is finished and print its row: exit 0 when Complete, "
                                           f"1 when Failed or Cancelled, {EXIT_WAIT_TIMED_OUT} when --timeout ran out.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="With --wait: the most seconds to wait [default: no limit].")
def add(config: StoreConfig, task_type: str, params: str, task_id: str | None, dependant_on: str | None,
        priority: int, project_id: str | None, max_attempts: int, wait: bool, timeout: float | None) -> None:
    """Queue a task. PARAMS is a JSON object or @file.json. Prints the id, or with --wait the finished row."""
    if timeout is not None and not wait:
        raise click.UsageError("--timeout goes with --wait")
    loaded = _load_params(params)
    try:
        check_submission(task_type, loaded)
    except SubmissionRefused as exc:
        raise click.BadParameter(exc.message, param_hint=exc.field) from None
    task = NewTask(task_type=task_type, params=loaded, id=task_id, dependant_on=dependant_on,
                   priority=priority, project_id=project_id, max_attempts=max_attempts)
    store = _open(config)
    if dependant_on is not None and store.get_task(dependant_on) is None:
        raise click.ClickException(f"dependency {dependant_on} does not exist")
    if task_id is not None and store.get_task(task_id) is not None:
        raise click.ClickException(f"task id {task_id} already exists")
    added = store.add_task(task)
    if not wait:
        click.echo(added)
        return
    finished = wait_until_finished(store, added, timeout)
    if finished is None:
        raise click.ClickException(f"task {added} disappeared while waiting (deleted?)")
    click.echo(json.dumps(finished.as_json(), indent=2, default=str))
    if finished.status is TaskStatus.COMPLETE:
        return
    if not finished.status.is_final:
        click.echo(f"task {added} is still {finished.status.value} after {timeout:g} s", err=True)
        sys.exit(EXIT_WAIT_TIMED_OUT)
    raise click.ClickException(f"task {added} {finished.status.value}: {finished.error_message or 'no error message'}")


@cli.command(name="list")
@with_store_config
@click.option("--status", type=click.Choice([s.value for s in TaskStatus]), default=None)
@click.option("--type", "task_type", default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--stuck", is_flag=True, help="Only Queued rows that no live worker can run (task type or model "
                                            "outside every live worker's --task-types/--models), with the reason.")
def list_(config: StoreConfig, status: str | None, task_type: str | None, limit: int, as_json: bool,
          stuck: bool) -> None:
    """List tasks, newest first."""
    store = _open(config)
    reasons: dict[str, str] = {}
    if stuck:
        if status not in (None, TaskStatus.QUEUED.value):
            raise click.UsageError("--stuck lists Queued rows; drop --status")
        tasks, reasons = _stuck_tasks(store, task_type, limit)
    else:
        tasks = store.list_tasks(status=TaskStatus(status) if status else None, task_type=task_type, limit=limit)
    for task in tasks:
        if as_json:
            click.echo(json.dumps({**task.as_json(), **({"stuck_reason": reasons[task.id]} if stuck else {})},
                                  default=str))
        elif stuck:
            click.echo(f"{task.id}  {task.task_type:<28} p={task.priority:<3} {task.created_at or ''}  "
                       f"{reasons[task.id]}")
        else:
            progress = f"{task.progress:.0%}" if task.progress is not None else ""
            if task.status is TaskStatus.IN_PROGRESS and task.progress_phase:
                progress = f"{progress} {task.progress_phase}"
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
    click.echo(json.dumps(task.as_json(), indent=2, default=str))


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
    store = _open(config)
    result = store.stats()
    stuck = _stuck(store)
    # A status no worker looks for ('queued', ...) is shown, not hidden: such rows never run.
    unknown = {status: n for status, n in result.by_status.items() if status not in {s.value for s in TaskStatus}}
    if as_json:
        click.echo(json.dumps({"by_status": result.by_status, "by_worker": result.by_worker,
                               "unknown_statuses": unknown, "stuck": [s.as_dict() for s in stuck]}))
        return
    click.echo("by status:")
    for status in TaskStatus:
        click.echo(f"  {status.value:<12} {result.by_status.get(status.value, 0)}")
    for status, count in sorted(unknown.items()):
        click.echo(f"  unknown status {status!r}: {count} (never claimed; the worker's sweep fails such rows)")
    click.echo("by worker:")
    for worker, counts in sorted(result.by_worker.items()):
        click.echo(f"  {worker}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if stuck:
        click.echo("stuck (Queued, no live worker can run them; `tasks list --stuck` lists the rows):")
    for item in stuck:
        model = f" model={item.kind.model}" if item.kind.model is not None else ""
        click.echo(f"  {item.kind.count} x {item.kind.task_type}{model}: {item.reason}")


def _takes(capabilities: Capabilities) -> str:
    if not capabilities.restricted:
        return ""
    shown = {name: ",".join(items) if items is not None else "any"
             for name, items in (("types", capabilities.task_types), ("models", capabilities.models))}
    return f" takes types={shown['types']} models={shown['models']}"


def _stuck(store: TaskStore) -> list[StuckKind]:
    from source.engine.model_defs import list_model_types

    return stuck_kinds(store.queued_kinds(), store.list_workers(alive_within_seconds=ALIVE_WITHIN_SECONDS),
                       list_model_types())


def _stuck_tasks(store: TaskStore, task_type: str | None, limit: int) -> tuple[list[Task], dict[str, str]]:
    """The Queued rows of the stuck kinds (oldest kinds' rows as list_tasks gives them), with their reasons."""
    tasks: list[Task] = []
    reasons: dict[str, str] = {}
    for item in _stuck(store):
        if task_type is not None and item.kind.task_type != task_type:
            continue
        for task in store.list_tasks(status=TaskStatus.QUEUED, task_type=item.kind.task_type, limit=10**9):
            if len(tasks) >= limit:
                return tasks, reasons
            if _model_of(task) == item.kind.model:
                tasks.append(task)
                reasons[task.id] = item.reason
    return tasks, reasons


def _model_of(task: Task) -> str | None:
    try:
        model = task.params().get("model")
    except InvalidParams:
        return None
    return None if model is None else str(model) if not isinstance(model, dict | list) else json.dumps(model)


@cli.command()
@with_store_config
@click.option("--alive-within", type=float, default=ALIVE_WITHIN_SECONDS, show_default=True,
              help="A running worker heard from within this many seconds counts as alive.")
@click.option("--json", "as_json", is_flag=True)
def workers(config: StoreConfig, alive_within: float, as_json: bool) -> None:
    """Live and dead workers: host, GPU, resident model, current task, last heartbeat."""
    for record in _open(config).list_workers(alive_within_seconds=alive_within):
        if as_json:
            click.echo(json.dumps({**record.__dict__, "capabilities": record.capabilities.as_json()}, default=str))
            continue
        state = "alive" if record.alive else ("stopped" if record.status == "stopped" else "DEAD")
        gpu = f"{record.gpu_name} {record.gpu_memory_gb} GiB" if record.gpu_name else "no GPU"
        click.echo(f"{record.id:<28} {state:<7} {record.host or ''}:{record.pid or ''}  {gpu}  "
                   f"model={record.resident_model or '-'} task={record.current_task_id or '-'} "
                   f"last={record.last_heartbeat}{_queue_summary(record.stats)}{_takes(record.capabilities)}")


@cli.command()
@with_store_config
@click.option("--dry-run", is_flag=True, help="Print the SQL of the pending migrations; apply nothing.")
def migrate(config: StoreConfig, dry_run: bool) -> None:
    """Apply the pending schema migrations and print what was applied (the same as worker.py --migrate-only)."""
    store = _open(config, check_schema=False)
    try:
        run_migrations(store, config, dry_run=dry_run)
    except StoreUnavailable as exc:
        raise store_failure(exc) from None
    finally:
        store.close()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per definition, one per line.")
@click.option("--gpu-memory", type=click.FloatRange(min=0), default=None, metavar="GB",
              help="Judge memory profiles for an accelerator of this size [default: this box's GPU].")
def models(as_json: bool, gpu_memory: float | None) -> None:
    """Every model definition: family, where its weights come from, whether they are on this box, size, and the
    memory profile it needs here."""
    from source.engine.loading.inventory import model_inventory
    from source.engine.paths import ckpts_dir
    from source.worker.gpu_info import detect_gpu

    gpu_name, detected = detect_gpu()
    gpu_gb = gpu_memory if gpu_memory is not None else detected
    rows = model_inventory(gpu_gb)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.as_dict()))
        return
    gpu = f"{gpu_gb:g} GB" + (f" ({gpu_name})" if gpu_name and gpu_memory is None else "") if gpu_gb else "none"
    click.echo(f"checkpoint folder: {ckpts_dir()}   GPU: {gpu}")
    click.echo(f"{'MODEL':<24} {'FAMILY':<13} {'SOURCE':<11} {'HERE':<8} {'SIZE':>7} {'PROFILE':>7}  WEIGHTS")
    for row in rows:
        size = f"{row.size_gb:g} GB" if row.size_gb else "-"
        profile = str(row.profile) if row.profile else "-"
        click.echo(f"{row.model_type:<24} {row.family:<13} {row.source:<11} {row.present:<8} {size:>7} {profile:>7}  "
                   f"{row.weights}")
        if row.missing:
            click.echo(f"{'':<24} missing: {', '.join(row.missing)}")


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
            f"switches={stats.get('model_switches', 0)} gen_s={stats.get('total_generation_time', 0):.1f}"
            + (f" auxiliary={','.join(stats['auxiliary_models'])}" if stats.get("auxiliary_models") else ""))


@cli.command()
@with_store_config
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; any other than loopback needs tokens.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--main-output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("outputs"),
              show_default=True, help="The workers' output root: the only folder files are served from.")
@click.option("--read-token", "read_tokens", multiple=True, envvar="TASKS_READ_TOKENS",
              help="Bearer token that may read (repeatable; env TASKS_READ_TOKENS, space-separated).")
@click.option("--write-token", "write_tokens", multiple=True, envvar="TASKS_WRITE_TOKENS",
              help="Bearer token that may also submit, cancel and retry (env TASKS_WRITE_TOKENS).")
@click.option("--refresh-seconds", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Live pages re-read the queue at least this often (Postgres does not notify progress).")
def serve(config: StoreConfig, host: str, port: int, main_output_dir: Path, read_tokens: tuple[str, ...],
          write_tokens: tuple[str, ...], refresh_seconds: float) -> None:
    """Web status page and HTTP API (/api, /openapi.json) over the same store."""
    import uvicorn

    from source.web.app import create_app
    from source.web.auth import AuthConfigError, Tokens, check_bind

    try:
        tokens = Tokens.from_values(read_tokens, write_tokens)
        check_bind(host, tokens)
    except AuthConfigError as exc:
        raise click.UsageError(str(exc)) from None
    app = create_app(_open(config), output_root=main_output_dir, tokens=tokens, refresh_seconds=refresh_seconds)
    # log_config=None: uvicorn's lines go through this process's logging (JSON or console, secrets redacted).
    uvicorn.run(app, host=host, port=port, log_config=None)


def serve_main() -> None:
    """The ``tasks-serve`` console script: ``tasks serve`` with its flags."""
    cli(["serve", *sys.argv[1:]])



_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ENDED = ("Complete", "Failed", "Cancelled")


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` as seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration like 30d, 12h, 90m, 45s or 2w",
                                 param_hint="--older-than")
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def _local_files(row: PurgedTask, output_root: Path) -> list[Path]:
    """The row's files on this box: its output (only when it lies under the output root: a row's text never
    decides what gets deleted elsewhere) and its _work folder."""
    files = []
    location = row.output_location
    if location and "://" not in location:
        resolved = Path(location).resolve()
        if output_root.resolve() in resolved.parents:
            files.append(resolved)
    work = output_root / WORK_FOLDER / task_stem(row.task_id)
    if work.is_dir():
        files.append(work)
    return [f for f in files if f.exists()]


@cli.command()
@with_store_config
@click.option("--older-than", required=True, metavar="AGE", help="Rows last changed longer ago than this: 30d, "
                                                                  "12h, 90m, 45s, 2w.")
@click.option("--status", "statuses", default=",".join(_ENDED), show_default=True,
              help="Comma-separated statuses to purge (ended ones only).")
@click.option("--main-output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("outputs"),
              show_default=True, help="The output root on this box: purged rows' files under it are deleted too.")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
def purge(config: StoreConfig, older_than: str, statuses: str, main_output_dir: Path, dry_run: bool) -> None:
    """Delete old ended rows and their local files (outputs under --main-output-dir, _work folders). A row
    that an unfinished row still depends on, or the parent of an unfinished child, is kept."""
    seconds = parse_duration(older_than)
    wanted = [s.strip() for s in statuses.split(",") if s.strip()]
    if not wanted or any(s not in _ENDED for s in wanted):
        raise click.BadParameter(f"statuses must be among {', '.join(_ENDED)}, got {statuses!r}",
                                 param_hint="--status")
    rows = _open(config).purge_tasks(older_than_seconds=seconds, statuses=[TaskStatus(s) for s in wanted],
                                     dry_run=dry_run)
    removed = 0
    for row in rows:
        files = _local_files(row, main_output_dir)
        click.echo(f"{'would delete' if dry_run else 'deleted'} {row.task_id}  {row.status.value:<9}  "
                   f"{' '.join(str(f) for f in files)}".rstrip())
        if dry_run:
            continue
        for path in files:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {len(rows)} rows" + ("" if dry_run else f" and {removed} local files/folders"))
    partials = _orphaned_partials(main_output_dir, seconds)
    for path in partials:
        click.echo(f"{verb} partial output {path}")
        if not dry_run:
            path.unlink(missing_ok=True)
    click.echo(f"{verb} {len(partials)} partial outputs")


def _orphaned_partials(output_root: Path, older_than_seconds: float) -> list[Path]:
    """Outputs a worker killed mid-write left under their temporary name (atomic_file): no row names them. Only
    those unchanged for ``older_than_seconds``, so a write in progress is never touched."""
    if not output_root.is_dir():
        return []
    cutoff = time.time() - older_than_seconds
    found = []
    for path in output_root.rglob(f"*{PARTIAL_MARK}*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink() and is_partial(path) and path.stat().st_mtime < cutoff:
                found.append(path)
    return sorted(found)



@cli.command()
@click.argument("model_types", nargs=-1, required=True, metavar="MODEL...")
def prefetch(model_types: tuple[str, ...]) -> None:
    """Download every file the MODEL definitions need into the Hugging Face cache (resumable; HF_TOKEN for
    gated repos; HF_HOME picks the cache). Run it on each GPU box, or once and copy the cache."""
    from source.engine.loading.download import prefetch as fetch

    fetch(model_types)


def prefetch_main() -> None:
    """The ``tasks-prefetch`` console script: ``tasks prefetch`` with its arguments."""
    cli(["prefetch", *sys.argv[1:]])


if __name__ == "__main__":
    cli()
