#!/usr/bin/env python
"""The headless worker daemon: ``python worker.py`` (SQLite) or ``python worker.py --db-type supabase``."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import click
import structlog

from headless_model_management import HeadlessTaskQueue
from headless_wgp import WanOrchestrator
from source.cli.store_options import is_service_key, run_migrations, store_failure, with_store_config
from source.db import DbType, StoreConfig, StoreConfigError, open_store, prepare_schema
from source.db.config import WAKE_MODE_CHOICES, StoreUnavailable
from source.db.models import Capabilities
from source.engine.model_defs import BoxOptions
from source.errors import TaskError
from source.generation.handler import resident_affinity
from source.logging_utils import capture_stray_output, configure_logging, json_lines_wanted, register_secret
from source.model_memory import ModelMemory
from source.retry import Backoff
from source.routing import known_task_types
from source.worker.capabilities import CapabilityError, parse_list, resolve_capabilities
from source.worker.engine_flags import apply_engine_flags, engine_flag_options
from source.worker.gpu_info import detect_gpu
from source.worker.loop import Worker
from source.worker.publishing import LegacyFilesPublisher, OutputPublisher
from source.worker.s3_storage import S3SettingsError
from source.worker.settings import WorkerSettings, default_worker_id, load_env_file
from source.worker.storage_target import open_publisher
from source.worker.webhooks import (
    DEFAULT_PROGRESS_SECONDS,
    DEFAULT_RETRY_SECONDS,
    SECRET_ENV,
    WebhookSender,
    WebhookSigner,
    check_webhook_syntax,
)

log = structlog.get_logger("worker")
# The flags' defaults are WorkerSettings' own (one place for each default).
DEFAULTS = WorkerSettings(worker_id="")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@with_store_config
@click.option("--poll-interval", type=click.FloatRange(min=0.05), default=DEFAULTS.poll_interval, show_default=True,
              help="Seconds between fallback polls; new rows wake an idle worker sooner (data_version / LISTEN).")
@click.option("--main-output-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULTS.main_output_dir,
              show_default=True, help="Where outputs are written.")
@click.option("--input-roots", "input_roots", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="A folder local input files (and local LoRAs) may come from; repeat for several. The output dir "
                   "is always one. [default: the output dir and the working directory]")
@click.option("--allow-private-urls", is_flag=True,
              help="Let URL inputs reach private, loopback and link-local addresses (refused by default).")
@click.option("--worker", "worker_id", default=None, help="Worker id written to claimed rows [default: hostname-pid].")
@click.option("--debug", is_flag=True, help="Debug-level logs (which tier each parameter came from, ...); keeps each "
                                           "task's _work/<task> folder.")
@click.option("--keep-local", is_flag=True, help="Keep the local copy of an output uploaded to Supabase or S3 "
                                                 "storage (deleted after a successful upload by default).")
@click.option("--storage", default=None, envvar="WORKER_STORAGE", metavar="s3://BUCKET/PREFIX",
              help="Upload outputs to S3-compatible storage (AWS S3, R2, B2, MinIO) instead of Supabase Storage or "
                   "the local folder; endpoint, region, keys, S3_PUBLIC_BASE_URL or presigned-URL expiry from "
                   "S3_* variables (docs/production.md) [env WORKER_STORAGE].")
@click.option("--webhook-url", envvar="WORKER_WEBHOOK_URL", default=None, metavar="URL",
              help="Post every task's webhooks here unless its row names its own params.webhook_url; signed with "
                   "WORKER_WEBHOOK_SECRET (Standard Webhooks, docs/production.md) [env WORKER_WEBHOOK_URL].")
@click.option("--webhook-retry-seconds", type=click.FloatRange(min=0), default=DEFAULT_RETRY_SECONDS,
              show_default=True, help="How long a webhook delivery that fails (network, 5xx, 429) is retried.")
@click.option("--webhook-progress-seconds", type=click.FloatRange(min=0.05), default=DEFAULT_PROGRESS_SECONDS,
              show_default=True, help="At most one progress webhook per task this often.")
@click.option("--save-logging", is_flag=False, flag_value="logs/worker.log", default=None, metavar="[PATH]",
              help="Also write JSON log lines to PATH (default logs/worker.log when given without a value).")
@click.option("--save-logging-max-mb", type=click.FloatRange(min=0), default=100.0, show_default=True,
              help="Rotate the --save-logging file at this size (PATH.1 ... PATH.5 kept; 0 = never rotate).")
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default="auto", show_default=True,
              help="auto: console on a terminal, JSON lines otherwise.")
@click.option("--delete-db", is_flag=True, help="Delete the SQLite db file (and its WAL) before starting.")
@click.option("--migrate-only", is_flag=True,
              help="Apply pending schema migrations, print what was applied, then exit (the only way a shared "
                   "database is migrated; SQLite files are migrated on every start).")
@click.option("--dry-run", is_flag=True, help="With --migrate-only: print the SQL of the pending migrations, "
                                              "apply nothing.")
# Older command lines pass it; one handler runs at a time, so there is nothing for it to set (warned).
@click.option("--queue-workers", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("--apply-reward-lora", is_flag=True, help="Add the reward LoRA to every generation that supports it.")
@click.option("--in-scene-lora", envvar="WORKER_IN_SCENE_LORA", default=None, metavar="FILE",
              help="magic_edit in_scene: this LoRA file of the model's LoRA folder [default: the first InScene-* file].")
@click.option("--legacy-unknown-task-types", is_flag=True, envvar="WORKER_LEGACY_UNKNOWN_TASK_TYPES",
              help="Generate an unknown task type that has params.model as generate_video (the older worker's way).")
@click.option("--legacy-output-location", is_flag=True, envvar="WORKER_LEGACY_OUTPUT_LOCATION",
              help="Write a failed row's error text into output_location too; on SQLite also publish outputs "
                   "as files/<name> under <db folder>/public/files (the older worker's conventions).")
@click.option("--colour-match-videos", is_flag=True, help="Colour-match travel segments to their start image.")
@click.option("--mask-active-frames/--no-mask-active-frames", default=DEFAULTS.mask_active_frames, show_default=True,
              help="Travel segments: mask video marks kept vs generated frames.")
@click.option("--once", is_flag=True, help="Exit when no task is claimable (scripts, demos).")
@click.option("--idle-release-minutes", type=click.FloatRange(min=0), default=None,
              help="Exit with code 75 after this many minutes without a claim, giving the GPU back (reigh-worker's "
                   "flag; 0 = never) [default: 15 with a Reigh personal access token, else never].")
@click.option("--idle-onboarding-grace-seconds", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="No idle release within this many seconds of the start.")
@click.option("--max-tasks", type=click.IntRange(min=1), default=None, help="Exit after processing N tasks.")
@click.option("--lease-seconds", type=click.FloatRange(min=0.5), default=DEFAULTS.lease_seconds, show_default=True,
              help="Lease of a claimed row; a crashed worker's row is reclaimed after it expires.")
@click.option("--shutdown-grace", type=click.FloatRange(min=0), default=DEFAULTS.shutdown_grace, show_default=True,
              help="On SIGTERM/SIGINT, seconds the running task may finish before it is requeued.")
@click.option("--task-timeout", type=click.FloatRange(min=0), default=DEFAULTS.task_timeout, show_default="scaled by the model",
              help="Fail a task that runs longer than this many seconds (0 = no limit). Default: 300 s plus 60 s "
                   "per GB of the task's model weights (1800 s for tasks without a model); a row's own "
                   "params.timeout_seconds may only shorten it.")
@click.option("--max-children-per-task", type=click.IntRange(min=1), default=DEFAULTS.max_children_per_task, show_default=True,
              help="Most child rows one orchestrator row may create (a travel of N images creates N rows).")
@click.option("--free-shutdown-requeues", type=click.IntRange(min=0), default=DEFAULTS.free_shutdown_requeues, show_default=True,
              help="Times a row interrupted by a worker shutdown is requeued without counting the attempt; "
                   "after that each one counts, so a row that always hangs ends Failed.")
@click.option("--affinity-window", type=click.FloatRange(min=0), default=DEFAULTS.affinity_window, show_default=True,
              help="Prefer rows for the resident model unless an older row has waited this many seconds.")
@click.option("--metrics-port", type=click.IntRange(min=0, max=65535), default=0, show_default=True,
              help="Serve Prometheus metrics at /metrics and a health check at /health on this port (0 = off).")
@click.option("--metrics-port-offset", type=click.IntRange(min=0), default=0, show_default=True,
              envvar="WORKER_METRICS_PORT_OFFSET",
              help="Added to --metrics-port: one unit file for every GPU (--metrics-port 9200 --metrics-port-offset "
                   "%i in systemd serves GPU 12 on 9212) [env WORKER_METRICS_PORT_OFFSET].")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port.")
@click.option("--ckpts-dir", type=click.Path(file_okay=False, path_type=Path), envvar="WGP_CKPTS_DIR", default=None,
              help="Folder of single-file checkpoints (a WanGP ckpts/ folder): definitions use the files found "
                   "there instead of downloading [env WGP_CKPTS_DIR; default: ckpts/ beside worker.py].")
@engine_flag_options
@click.option("--retry-delay", type=click.FloatRange(min=0), default=DEFAULTS.retry_backoff.first, show_default=True,
              help="A row that failed for a transient reason (network, storage, hub 5xx) runs again after this "
                   "many seconds, doubling per attempt (with jitter) up to --retry-delay-max, until max_attempts.")
@click.option("--retry-delay-max", type=click.FloatRange(min=0), default=DEFAULTS.retry_backoff.cap, show_default=True,
              help="The longest wait between two attempts of a row.")
@click.option("--db-max-connections", type=click.IntRange(min=1), default=None, envvar="WORKER_DB_MAX_CONNECTIONS",
              help="Direct Postgres (--db-url): the most server connections this worker uses for claims, "
                   "heartbeats, progress and results; the waiting connection (doorbell or LISTEN) takes one more "
                   "unless --wake-mode poll "
                   "[default: 1; env WORKER_DB_MAX_CONNECTIONS].")
@click.option("--wake-mode", type=click.Choice(WAKE_MODE_CHOICES), default="auto", show_default=True,
              envvar="WORKER_WAKE_MODE",
              help="Postgres/Supabase: how an idle worker hears of new rows. doorbell: the dispatcher wakes one "
                   "idle worker per row, whose waiting connection sleeps until the server cancels that one "
                   "sleep (LISTEN where the server may not cancel it); listen: the same on the worker's own "
                   "LISTEN channel (every NOTIFY wakes every listening server process); poll: the same, the "
                   "worker polling its wake marker (no waiting connection); broadcast: every idle worker looks "
                   "at the table on every change; auto: doorbell, or poll behind the transaction pooler (port "
                   "6543) and over the Supabase API [env WORKER_WAKE_MODE].")
@click.option("--preload-model", default=None, envvar="WORKER_PRELOAD_MODEL", metavar="NAME",
              help="Load this model (downloading its weights if needed) before claiming the first task "
                   "[env WORKER_PRELOAD_MODEL].")
@click.option("--task-types", "task_types", multiple=True, envvar="WORKER_TASK_TYPES", metavar="TYPES",
              help="Claim only these task types (comma-separated or repeated) [env WORKER_TASK_TYPES; default: all].")
@click.option("--models", "model_patterns", multiple=True, envvar="WORKER_MODELS", metavar="GLOBS",
              help="Claim only rows for these models: globs over the model definitions, e.g. 't2v*,flux' "
                   "[env WORKER_MODELS; default: every model whose memory need at its profile fits the GPU found].")
def main(config: StoreConfig, **opts: object) -> None:
    """Claim tasks from the queue, run them, and write status and outputs back."""
    configure_logging(str(opts["log_format"]), debug=bool(opts["debug"]), save_path=opts["save_logging"],  # type: ignore[arg-type]
                      save_max_bytes=int(float(opts["save_logging_max_mb"]) * 2**20))  # type: ignore[arg-type]
    # This box's engine options, passed down to the engine and the capability check (not through os.environ).
    box = BoxOptions(overrides=apply_engine_flags(opts),
                     ckpts_dir=Path(opts["ckpts_dir"]).expanduser().resolve() if opts["ckpts_dir"] else None)  # type: ignore[arg-type]
    config = dataclasses.replace(config, db_max_connections=opts["db_max_connections"],  # type: ignore[arg-type]
                                 wake_mode=str(opts["wake_mode"]))
    try:
        config.validate()
    except StoreConfigError as exc:
        raise click.UsageError(str(exc)) from None

    if opts["delete_db"]:
        if config.db_type is not DbType.SQLITE:
            raise click.UsageError("--delete-db only applies to the SQLite backend; refusing to touch a shared database")
        for suffix in ("", "-wal", "-shm"):
            Path(config.db_file + suffix).unlink(missing_ok=True)
        log.info("db_deleted", db_file=config.db_file)

    if opts["dry_run"] and not opts["migrate_only"]:
        raise click.UsageError("--dry-run goes with --migrate-only")
    # Only --migrate-only changes a shared database's schema; a worker checks it and stops when it is behind.
    try:
        # on a Reigh database (direct or edge functions) the store claims only what the routing table runs
        store = open_store(config, keep_local=bool(opts["keep_local"]),
                           runnable_task_types=_runnable_task_types(opts))
        if opts["migrate_only"]:
            try:
                run_migrations(store, config, dry_run=bool(opts["dry_run"]))
            finally:
                store.close()
            return
        prepare_schema(store, config)
    except StoreUnavailable as exc:
        raise store_failure(exc) from None
    if json_lines_wanted(str(opts["log_format"])):
        # A daemon from here on (--migrate-only printed its report above): log shippers read one JSON object
        # a line, so library prints, bars and warnings become log events too.
        capture_stray_output()

    if opts["queue_workers"] is not None:
        log.warning("queue_workers_ignored", reason="generation runs in the task's handler, one at a time; "
                    "drop --queue-workers")
    capabilities = _capabilities(opts, box)
    settings = WorkerSettings(
        worker_id=str(opts["worker_id"] or default_worker_id()),
        main_output_dir=Path(opts["main_output_dir"]),  # type: ignore[arg-type]
        poll_interval=float(opts["poll_interval"]),  # type: ignore[arg-type]
        lease_seconds=float(opts["lease_seconds"]),  # type: ignore[arg-type]
        shutdown_grace=float(opts["shutdown_grace"]),  # type: ignore[arg-type]
        task_timeout=None if opts["task_timeout"] is None else float(opts["task_timeout"]),  # type: ignore[arg-type]
        max_children_per_task=int(opts["max_children_per_task"]),  # type: ignore[arg-type]
        free_shutdown_requeues=int(opts["free_shutdown_requeues"]),  # type: ignore[arg-type]
        affinity_window=float(opts["affinity_window"]),  # type: ignore[arg-type]
        apply_reward_lora=bool(opts["apply_reward_lora"]),
        colour_match_videos=bool(opts["colour_match_videos"]),
        mask_active_frames=bool(opts["mask_active_frames"]),
        input_roots=tuple(Path(p) for p in opts["input_roots"]),  # type: ignore[union-attr]
        allow_private_urls=bool(opts["allow_private_urls"]),
        keep_work_dirs=bool(opts["debug"]),
        retry_backoff=Backoff(first=float(opts["retry_delay"]), cap=float(opts["retry_delay_max"])),  # type: ignore[arg-type]
        in_scene_lora=opts["in_scene_lora"] or None,  # type: ignore[arg-type]
        legacy_unknown_task_types=bool(opts["legacy_unknown_task_types"]),
        legacy_output_location=bool(opts["legacy_output_location"]),
        # The files/<name> form is relative to the SQLite file's folder; Postgres rows keep paths or URLs.
        legacy_public_root=Path(config.db_file).resolve().parent / "public"
        if opts["legacy_output_location"] and config.db_type is DbType.SQLITE else None,
        capabilities=capabilities,
        idle_release_seconds=60.0 * _idle_release_minutes(config, opts["idle_release_minutes"]),  # type: ignore[arg-type]
        idle_release_grace_seconds=float(opts["idle_onboarding_grace_seconds"]),  # type: ignore[arg-type]
    )
    # One resident model per process: the queue is built here and reaches handlers through the task context.
    # One ModelMemory: the auxiliary models the engine and the handlers load are freed by the engine's loads.
    memory = ModelMemory()
    generation = HeadlessTaskQueue(WanOrchestrator(settings.main_output_dir.resolve(), box=box, memory=memory))
    observer = None
    metrics_port = int(opts["metrics_port"]) + int(opts["metrics_port_offset"]) if opts["metrics_port"] else 0  # type: ignore[call-overload]
    if metrics_port > 65535:
        raise click.BadParameter(f"--metrics-port + --metrics-port-offset = {metrics_port}, above 65535",
                                 param_hint="--metrics-port-offset")
    if metrics_port:
        from source.worker.metrics import WorkerMetrics, serve_metrics

        # A handler checkpoints at least once a step; a loop silent this long is stuck.
        observer = WorkerMetrics(store, stuck_after_seconds=max(120.0, 3 * settings.poll_interval),
                                 model_switches=lambda: generation.stats.model_switches)
        serve_metrics(observer, str(opts["metrics_host"]), metrics_port)
        log.info("metrics_serving", host=opts["metrics_host"], port=metrics_port)
    publisher = _publisher(config, settings, opts)
    webhooks = _webhooks(store, settings, opts)
    worker = Worker(store, settings, publisher=publisher, max_tasks=opts["max_tasks"],  # type: ignore[arg-type]
                    webhooks=webhooks,
                    exit_when_idle=bool(opts["once"]), observer=observer, generation=generation,
                    affinity=lambda: resident_affinity(generation), queue_stats=generation.stats.as_dict,
                    models=memory)
    if opts["preload_model"]:
        _preload(generation, str(opts["preload_model"]))
    worker.install_signal_handlers()
    try:
        code = worker.run()
    finally:
        store.close()
    if code:
        sys.stdout.flush()
        sys.stderr.flush()
        # A handler thread that ignored cancellation must not keep the process alive.
        os._exit(code)


def _publisher(config: StoreConfig, settings: WorkerSettings, opts: dict[str, object]) -> OutputPublisher:
    storage = str(opts["storage"]) if opts["storage"] else None
    if settings.legacy_public_root is not None:
        if storage:
            raise click.UsageError("--storage and --legacy-output-location on SQLite both say where outputs go; "
                                   "choose one")
        return LegacyFilesPublisher(settings.legacy_public_root)
    try:
        return open_publisher(config, keep_local=bool(opts["keep_local"]), storage=storage)
    except S3SettingsError as exc:
        raise click.BadParameter(str(exc), param_hint="--storage") from None


def _webhooks(store: object, settings: WorkerSettings, opts: dict[str, object]) -> WebhookSender | None:
    """The webhook sender when this worker can sign (WORKER_WEBHOOK_SECRET); rows naming a webhook_url fail
    without one, saying so."""
    secret = os.environ.get(SECRET_ENV) or None
    default_url = str(opts["webhook_url"]) if opts["webhook_url"] else None
    if secret is None:
        if default_url:
            raise click.UsageError(f"--webhook-url needs {SECRET_ENV} (whsec_<base64>) to sign the deliveries")
        return None
    register_secret(secret)
    try:
        signer = WebhookSigner(secret)
        if default_url:
            check_webhook_syntax({"webhook_url": default_url})
    except (ValueError, TaskError) as exc:
        raise click.UsageError(str(exc).replace("params.webhook_url", "--webhook-url")) from None
    return WebhookSender(store, signer, worker_id=settings.worker_id, default_url=default_url,  # type: ignore[arg-type]
                         retry_seconds=float(opts["webhook_retry_seconds"]),  # type: ignore[arg-type]
                         progress_seconds=float(opts["webhook_progress_seconds"]))  # type: ignore[arg-type]


def _capabilities(opts: dict[str, object], box: BoxOptions) -> Capabilities:
    """--task-types / --models and the detected GPU's memory, as the lists the claim takes."""
    try:
        return resolve_capabilities(parse_list(opts["task_types"]), parse_list(opts["model_patterns"]),  # type: ignore[arg-type]
                                    detect_gpu()[1],
                                    allow_unknown_task_types=bool(opts["legacy_unknown_task_types"]), box=box)
    except CapabilityError as exc:
        raise click.BadParameter(str(exc), param_hint=exc.flag) from None


def _idle_release_minutes(config: StoreConfig, given: float | None) -> float:
    """reigh-worker releases a user's own GPU after 15 idle minutes, never a service-role worker's."""
    if given is not None:
        return given
    return 15.0 if config.reigh_access_token and not is_service_key(config.reigh_access_token) else 0.0


def _runnable_task_types(opts: dict[str, object]) -> frozenset[str] | None:
    """The task types this worker runs: Reigh's edge functions may hand it others (its PAT claim ignores
    run_type), which it gives back instead of failing. None: any (--legacy-unknown-task-types)."""
    if opts["legacy_unknown_task_types"]:
        return None
    return frozenset(known_task_types())


def _preload(generation: HeadlessTaskQueue, model_type: str) -> None:
    """Make ``model_type`` resident (downloading its weights if needed) before the first claim, so the first
    task's lease is not spent on a download."""
    from source.engine.model_defs import load_model_def
    from source.errors import DefinitionError, InvalidParams, TaskError

    try:
        load_model_def(model_type)
    except (InvalidParams, DefinitionError) as exc:
        raise click.BadParameter(str(exc), param_hint="--preload-model") from None
    started = time.monotonic()
    log.info("model_preloading", model_type=model_type)
    try:
        generation.generator.load_model(model_type)
    except TaskError as exc:
        raise click.ClickException(f"--preload-model {model_type}: {exc}") from None
    log.info("model_preloaded", model_type=model_type, seconds=round(time.monotonic() - started, 3))


def run() -> None:
    """The console script and ``python worker.py``: ``.env`` first, so its values reach the flags' envvars."""
    load_env_file()
    main()


if __name__ == "__main__":
    run()
