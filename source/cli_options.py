"""Store-selection flags shared by ``worker.py`` and the ``tasks`` CLI."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import click

from source.db import DbType, StoreConfig
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
        click.option("--supabase-access-token", envvar="SUPABASE_SERVICE_ROLE_KEY", default=None,
                     help="Service-role key or access token; prefer the env var SUPABASE_SERVICE_ROLE_KEY."),
        # Older command lines pass it; nothing needs it (public URLs come from the project URL), so it is
        # accepted, never stored, and a warning says so.
        click.option("--supabase-anon-key", envvar="SUPABASE_ANON_KEY", default=None, hidden=True,
                     help="Ignored (not needed): accepted so older command lines keep working."),
        click.option("--supabase-bucket", envvar="SUPABASE_VIDEO_BUCKET", default="image_uploads", show_default=True,
                     help="Supabase Storage bucket for outputs [env SUPABASE_VIDEO_BUCKET]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def store_config(kwargs: dict[str, Any]) -> StoreConfig:
    """Pop the store flags from a click kwargs dict into a StoreConfig (registering secrets first)."""
    db_url = kwargs.get("db_url")
    for secret in (kwargs.get("supabase_access_token"), kwargs.get("supabase_anon_key"), db_url):
        register_secret(secret)
    if db_url:
        # The password alone shows up too (driver errors, DSN dumps).
        with contextlib.suppress(ValueError):
            register_secret(urlsplit(db_url).password)
    if kwargs.pop("supabase_anon_key", None):
        # Logging is not configured yet (the flags decide how): say it on stderr directly.
        click.echo("warning: --supabase-anon-key / SUPABASE_ANON_KEY is ignored (nothing here needs the anon "
                   "key); drop it", err=True)
    db_type = kwargs.pop("db_type")
    if db_type is None:
        db_type = DbType.SUPABASE if kwargs.get("db_url") else DbType.SQLITE
    return StoreConfig(
        db_type=DbType(db_type),
        db_file=kwargs.pop("db_file"),
        busy_timeout_seconds=kwargs.pop("db_busy_timeout"),
        db_url=kwargs.pop("db_url"),
        supabase_url=kwargs.pop("supabase_url"),
        supabase_key=kwargs.pop("supabase_access_token"),
        storage_bucket=kwargs.pop("supabase_bucket"),
    )


def with_store_config(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a click command: replaces the store flags with one ``config`` argument."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        config = store_config(kwargs)
        return func(*args, config=config, **kwargs)

    return store_options(wrapper)
