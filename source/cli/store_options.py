"""Store-selection flags shared by ``worker.py`` and the ``tasks`` CLI."""

from __future__ import annotations

import base64
import contextlib
import functools
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import click

from source.db import DbType, StoreConfig, TaskStore
from source.db.config import StoreUnavailable
from source.logging_utils import register_secret


def store_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--db-type", type=click.Choice([t.value for t in DbType]), default=None, envvar="WORKER_DB_TYPE",
                     help="sqlite: one box, an embedded db file. supabase: many boxes on one Postgres/Supabase "
                          "[default: supabase when --db-url is given, else sqlite]."),
        click.option("--db-file", default="tasks.db", show_default=True, envvar="WORKER_DB_FILE",
                     help="SQLite db file (created and migrated when missing)."),
        click.option("--db-busy-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
                     envvar="WORKER_DB_BUSY_TIMEOUT",
                     help="SQLite: seconds a statement waits on another process's lock before the worker backs off "
                          "and retries."),
        click.option("--db-url", envvar="SUPABASE_DB_URL", default=None,
                     help="Direct Postgres URL for --db-type supabase [env SUPABASE_DB_URL]."),
        click.option("--supabase-url", envvar="SUPABASE_URL", default=None,
                     help="Supabase project URL [env SUPABASE_URL]."),
        click.option("--supabase-service-key", envvar=["SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SERVICE_KEY"],
                     default=None, help="Service-role key for the Supabase API and Storage; prefer the env var "
                                        "SUPABASE_SERVICE_ROLE_KEY (or its alias SUPABASE_SERVICE_KEY)."),
        click.option("--supabase-access-token", envvar="SUPABASE_ACCESS_TOKEN", default=None,
                     help="A user's personal access token (user_api_tokens), with the anon key: the worker "
                          "claims only that user's projects' tasks (bring your own GPU). A service-role key "
                          "given here is used as one, as the older worker did [env SUPABASE_ACCESS_TOKEN]."),
        click.option("--supabase-anon-key", envvar="SUPABASE_ANON_KEY", default=None,
                     help="Anon key, for public URLs of uploaded outputs [env SUPABASE_ANON_KEY]."),
        click.option("--reigh-access-token", envvar="REIGH_ACCESS_TOKEN", default=None,
                     help="Run against Reigh through its edge functions, as reigh-worker does: a Reigh personal "
                          "access token (that user's projects) or the service-role key (every user Reigh serves "
                          "from the cloud). No SQL, no migration [env REIGH_ACCESS_TOKEN; see docs/reigh.md]."),
        click.option("--max-task-wait-minutes", "reigh_max_task_wait_minutes", type=click.IntRange(min=1), default=5,
                     show_default=True, envvar="MAX_TASK_WAIT_MINUTES",
                     help="With --reigh-access-token: claim-next-task prefers the resident model until a row "
                          "has waited this long [env MAX_TASK_WAIT_MINUTES, as reigh-worker]."),
        click.option("--supabase-bucket", envvar="SUPABASE_VIDEO_BUCKET", default="image_uploads", show_default=True,
                     help="Supabase Storage bucket for outputs [env SUPABASE_VIDEO_BUCKET]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def store_config(kwargs: dict[str, Any]) -> StoreConfig:
    """Pop the store flags from a click kwargs dict into a StoreConfig (registering secrets first)."""
    db_url = kwargs.get("db_url")
    reigh_token = kwargs.pop("reigh_access_token")
    for secret in (kwargs.get("supabase_service_key"), kwargs.get("supabase_access_token"),
                   kwargs.get("supabase_anon_key"), db_url, reigh_token):
        register_secret(secret)
    if db_url:
        # The password alone shows up too (driver errors, DSN dumps).
        with contextlib.suppress(ValueError):
            register_secret(urlsplit(db_url).password)
    db_type = kwargs.pop("db_type")
    if db_type is None:
        db_type = DbType.SUPABASE if kwargs.get("db_url") or reigh_token else DbType.SQLITE
    max_wait = kwargs.pop("reigh_max_task_wait_minutes")
    if reigh_token and not kwargs.get("supabase_url"):
        from source.db.reigh_edge import REIGH_SUPABASE_URL

        kwargs["supabase_url"] = REIGH_SUPABASE_URL  # reigh-worker's default project
    service_key, access_token = kwargs.pop("supabase_service_key"), kwargs.pop("supabase_access_token")
    anon_key = kwargs.pop("supabase_anon_key")
    db_url = kwargs.pop("db_url")
    personal_token = None
    if access_token and is_service_key(access_token):
        service_key = service_key or access_token  # the older worker's way to pass the service-role key
    elif access_token:
        if service_key:
            raise click.UsageError("give either a service key (SUPABASE_SERVICE_ROLE_KEY) or a personal access "
                                   "token (--supabase-access-token), not both")
        if not (anon_key or db_url):
            raise click.UsageError("a personal access token goes with the project's anon key "
                                   "(--supabase-anon-key / SUPABASE_ANON_KEY) or a direct --db-url")
        personal_token = access_token  # bring-your-own-GPU: the token decides which rows this worker sees
    return StoreConfig(
        db_type=DbType(db_type),
        db_file=kwargs.pop("db_file"),
        busy_timeout_seconds=kwargs.pop("db_busy_timeout"),
        db_url=db_url,
        supabase_url=kwargs.pop("supabase_url"),
        # the API key: the service key, or in token mode the anon key (the token itself travels as an argument)
        supabase_key=service_key or (anon_key if personal_token else None),
        supabase_anon_key=anon_key,
        access_token=personal_token,
        storage_bucket=kwargs.pop("supabase_bucket"),
        reigh_access_token=reigh_token,
        reigh_max_task_wait_minutes=max_wait,
    )


def is_service_key(value: str) -> bool:
    """Supabase's service keys: the new ``sb_secret_...`` form, or a JWT whose role claim is service_role
    (not verified here: the server does). Anything else passed as an access token is a personal token."""
    if value.startswith("sb_secret_"):
        return True
    parts = value.split(".")
    if len(parts) != 3:
        return False
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(claims, dict) and claims.get("role") == "service_role"


def with_store_config(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a click command: replaces the store flags with one ``config`` argument."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        config = store_config(kwargs)
        return func(*args, config=config, **kwargs)

    return store_options(wrapper)


def store_failure(exc: StoreUnavailable) -> click.ClickException:
    """A store that is unreachable or not migrated, as one line on stderr and the store's exit code
    (README "Exit codes": 4 schema behind the code, 5 no tasks table, 1 anything else)."""
    failure = click.ClickException(str(exc))
    failure.exit_code = exc.exit_code
    return failure


def run_migrations(store: TaskStore, config: StoreConfig, *, dry_run: bool) -> None:
    """``worker.py --migrate-only`` and ``tasks migrate``: the only commands that change a schema. Prints
    what was applied, or with ``dry_run`` the SQL of each pending migration (nothing applied)."""
    if not dry_run:
        applied = store.migrate()
        click.echo(f"migrations applied: {', '.join(applied) if applied else 'none (schema up to date)'}")
        return
    if config.db_type is DbType.SQLITE or not config.db_url:
        raise click.UsageError("--dry-run needs a direct Postgres URL (--db-url / SUPABASE_DB_URL)")
    pending = store.pending_migrations()  # type: ignore[attr-defined]  (PostgresTaskStore)
    for migration in pending:
        click.echo(f"-- migration {migration.label}\n{migration.sql.rstrip()}\n")
    names = ", ".join(m.label for m in pending) or "none (schema up to date)"
    click.echo(f"-- dry run, nothing applied; pending: {names}")
