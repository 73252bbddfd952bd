"""Input files named by params: local paths checked and made absolute, http(s) URLs downloaded
(size- and time-capped) into the task's work dir. Any other scheme is refused."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlparse

import httpx
import structlog

from source.errors import InputUnavailable, InvalidParams
from source.paths import safe_filename

log = structlog.get_logger(__name__)

MAX_DOWNLOAD_BYTES = 512 * 2**20
DOWNLOAD_TIMEOUT_SECONDS = 60.0
MAX_REDIRECTS = 5


def is_url(value: str) -> bool:
    return "://" in value[:16]


def resolve_input(value: object, name: str, work_dir: Path, *, max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """A local, existing file for ``value`` (a path or an http/https URL)."""
    if not isinstance(value, str | Path) or not str(value).strip():
        raise InvalidParams(f"params.{name} must be a file path or an http(s) URL, got {value!r}")
    text = str(value).strip()
    if is_url(text):
        return download(text, name, work_dir, max_bytes=max_bytes)
    path = Path(text).expanduser().resolve()
    if not path.is_file():
        raise InputUnavailable(f"params.{name}: file not found: {path}")
    return path


def download(url: str, name: str, work_dir: Path, *, max_bytes: int = MAX_DOWNLOAD_BYTES,
             timeout: float = DOWNLOAD_TIMEOUT_SECONDS) -> Path:
    scheme = urlparse(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidParams(f"params.{name}: URL scheme {scheme!r} is not allowed (only http and https)")
    target_name = safe_filename(Path(urlparse(url).path).name or "download")
    target = work_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}_{target_name}"
    if target.is_file():
        return target
    work_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    try:
        # Redirects are followed by hand so a redirect to file:// or ftp:// is refused, not followed.
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            current = url
            for _ in range(MAX_REDIRECTS + 1):
                with client.stream("GET", current) as response:
                    if response.is_redirect:
                        current = str(response.next_request.url) if response.next_request else ""
                        if urlparse(current).scheme.lower() not in ("http", "https"):
                            raise InvalidParams(f"params.{name}: {url} redirects to a non-http(s) URL {current!r}")
                        continue
                    if response.status_code != 200:
                        raise InputUnavailable(f"params.{name}: GET {url} returned HTTP {response.status_code}")
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > max_bytes:
                        raise InputUnavailable(f"params.{name}: {url} is {declared} bytes; the limit is {max_bytes}")
                    received = 0
                    with open(partial, "wb") as handle:
                        for chunk in response.iter_bytes():
                            received += len(chunk)
                            if received > max_bytes:
                                raise InputUnavailable(f"params.{name}: {url} is larger than the {max_bytes}-byte limit")
                            handle.write(chunk)
                    partial.rename(target)
                    log.info("input_downloaded", name=name, url=url, bytes=received)
                    return target
            raise InputUnavailable(f"params.{name}: {url} redirected more than {MAX_REDIRECTS} times")
    except httpx.HTTPError as exc:
        raise InputUnavailable(f"params.{name}: could not download {url}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
