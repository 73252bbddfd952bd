"""Weights from the Hugging Face hub cache: whether the hub may be asked, and cached fetches that fail
with one clear ModelUnavailable naming what is missing."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from source.errors import ModelTemporarilyUnavailable, ModelUnavailable

_failures: dict[tuple[str, ...], str] = {}


def hub_offline() -> bool:
    # Read at call time: huggingface_hub reads HF_HUB_OFFLINE only once, at import.
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def fetch_hub_file(repo: str, filename: str, *, what: str, revision: str | None = None,
                   max_bytes: int | None = None) -> Path:
    """The cached local path of ``repo/filename``; downloaded when missing unless the hub is offline.
    ``max_bytes``: a file the hub says is larger is refused before a byte of it is downloaded (a row naming
    a model's 20 GB weights as its LoRA must not fill the disk first)."""
    from huggingface_hub import hf_hub_download

    def download(local_only: bool) -> str:
        if not local_only and max_bytes is not None:
            _refuse_if_larger(repo, filename, revision, max_bytes, what)
        return hf_hub_download(repo, filename, revision=revision, local_files_only=local_only)

    return _fetch(repo, filename, what, download)


class HubFileTooLarge(ModelUnavailable):
    """The hub says the file is larger than the caller accepts: refused, not downloaded."""


def _refuse_if_larger(repo: str, filename: str, revision: str | None, max_bytes: int, what: str) -> None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    size = get_hf_file_metadata(hf_hub_url(repo, filename, revision=revision)).size
    if size is not None and size > max_bytes:
        raise HubFileTooLarge(f"{what} hub repo {repo!r}, file {filename!r} is {size} bytes; the limit is "
                              f"{max_bytes} bytes: not downloaded")


def fetch_hub_snapshot(repo: str, *, what: str, allow_patterns: list[str], revision: str | None = None) -> Path:
    """The cached local folder of ``repo`` (only the files matching ``allow_patterns``)."""
    from huggingface_hub import snapshot_download

    return _fetch(repo, "", what, lambda local_only: snapshot_download(
        repo, allow_patterns=allow_patterns, revision=revision, local_files_only=local_only))


def _fetch(repo: str, filename: str, what: str, download: Callable[[bool], str]) -> Path:
    return fetch_cached((repo, filename), download, lambda why: ModelUnavailable(_message(repo, filename, what, why)),
                        repo=repo)


def fetch_cached(key: tuple[str, ...], download: Callable[[bool], str],
                 unavailable: Callable[[str], ModelUnavailable], *, repo: str = "") -> Path:
    """Cache first (``download(True)``: local files only), then the hub (``download(False)``). A failed
    download is remembered for the life of the process under ``key``: an unreachable hub retries for ~25 s
    per call, which every later task would otherwise pay again; a transient failure (a 5xx, a dropped
    connection) is not remembered and raises ModelTemporarilyUnavailable, which the worker retries later.
    ``unavailable(why)`` builds the error; ``repo`` names the repository in access hints."""
    try:
        return Path(download(True))
    except Exception as exc:  # not cached (or a broken cache entry): the only case left is a download
        cached_error = exc
    if hub_offline() or key in _failures:
        why = "the hub is offline (HF_HUB_OFFLINE=1)" if hub_offline() else _failures[key]
        raise unavailable(why) from cached_error
    try:
        return Path(download(False))
    except HubFileTooLarge:
        raise  # the answer itself, not a failure to reach the hub
    except Exception as exc:  # offline, 404, auth, network: all mean "not available here"
        why = f"the hub could not be reached ({type(exc).__name__}: {str(exc)[:200]})" + access_hint(exc, repo)
        if is_transient_hub_error(exc):  # not remembered: a later attempt of the row may well succeed
            raise ModelTemporarilyUnavailable(str(unavailable(why))) from exc
        _failures[key] = why
        raise unavailable(why) from exc

def is_transient_hub_error(exc: BaseException) -> bool:
    """A hub 5xx/429 or a dropped connection (worth retrying), as opposed to a 404, a gate or a bad token."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    seen: BaseException | None = exc
    while seen is not None:
        status = getattr(getattr(seen, "response", None), "status_code", None)
        if isinstance(seen, HfHubHTTPError) and status is not None:
            return status >= 500 or status == 429
        if isinstance(seen, httpx.TransportError | ConnectionError | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def access_hint(exc: BaseException, repo: str) -> str:
    """What to do when the hub refused ``repo`` (gated, private, bad token); empty for any other failure."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, GatedRepoError):
            return (f" The repo is gated: accept its terms at https://huggingface.co/{repo} with your account, then "
                    "give this box a token with read access (export HF_TOKEN=hf_..., or `hf auth login`).")
        status = getattr(getattr(seen, "response", None), "status_code", None)
        if isinstance(seen, RepositoryNotFoundError) or (isinstance(seen, HfHubHTTPError) and status in (401, 403)):
            return (f" The hub refused {repo!r} (not found, private, or the token lacks access): check the repo id "
                    "and set HF_TOKEN to a token that can read it.")
        seen = seen.__cause__ or seen.__context__
    return ""


def _message(repo: str, filename: str, what: str, why: str) -> str:
    where = f"hub repo {repo!r}, file {filename!r}" if filename else f"hub repo {repo!r}"
    command = f"hf download {repo} {filename}".rstrip()
    return (f"{what} weights ({where}) are not in the local Hugging Face cache and {why}. "
            f"On a connected machine run `{command}` and copy the cache (HF_HOME) here.")
