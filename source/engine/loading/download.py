"""Prefetch: every file a model definition needs, into the Hugging Face cache, before a task needs it
(``tasks prefetch MODEL...``, the ``tasks-prefetch`` console script, or ``python -m source.engine.loading.download``).
Downloads show the hub's progress bars and resume where an interrupted run stopped."""

from __future__ import annotations

import time
from pathlib import Path

import click
import structlog

from source.errors import InvalidParams, TaskError

log = structlog.get_logger(__name__)


def prefetch(model_types: tuple[str, ...], echo=click.echo) -> list[tuple[str, Path]]:
    """Download each model's files (the diffusers folder, single files, built-in LoRAs); ClickException with
    the hub's reason (and what to do about a gated repo or a missing token) on the first that fails."""
    from source.engine.loading.pipeline import download

    fetched = []
    for model_type in model_types:
        started = time.monotonic()
        try:
            path = download(model_type)
        except (TaskError, InvalidParams) as exc:
            raise click.ClickException(f"{model_type}: {exc}") from exc
        seconds = round(time.monotonic() - started, 1)
        log.info("model_prefetched", model_type=model_type, path=str(path), seconds=seconds)
        echo(f"{model_type}: {path}")
        fetched.append((model_type, path))
    return fetched


@click.command()
@click.argument("model_types", nargs=-1, required=True)
def main(model_types: tuple[str, ...]) -> None:
    """Download the weights of MODEL_TYPES (names of defaults/*.json) into the Hugging Face cache."""
    prefetch(model_types)


if __name__ == "__main__":
    main()
