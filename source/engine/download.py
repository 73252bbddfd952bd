"""CLI: ``python -m source.engine.download MODEL_TYPE`` prefetches weights on a connected machine."""

from __future__ import annotations

import click

from source.engine.loading import download
from source.errors import TaskError


@click.command()
@click.argument("model_types", nargs=-1, required=True)
def main(model_types: tuple[str, ...]) -> None:
    """Download the weights of MODEL_TYPES (names of defaults/*.json) into the Hugging Face cache."""
    for model_type in model_types:
        try:
            path = download(model_type)
        except TaskError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"{model_type}: {path}")


if __name__ == "__main__":
    main()
