"""Input files named by params, resolved under the task's input policy (source.task_files.policy): local
paths checked against the input roots, http(s) URLs downloaded (size-capped, with a total deadline,
every hop's host checked) into the task's work dir, and the content sniffed before anyone uses it."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
import structlog

from source.errors import InputTemporarilyUnavailable, InputUnavailable, InvalidParams
from source.logging_utils import redact_url
from source.task_files.paths import safe_filename, task_work_dir
from source.task_files.policy import InputKind, InputPolicy, TaskInputs, sniff

log = structlog.get_logger(__name__)

DOWNLOAD_TIMEOUT_SECONDS = 60.0  # the longest silence between two reads; the policy's deadline caps the total
MAX_REDIRECTS = 5


# The generation params that name files, and what their content must be.
GENERATION_FILE_PARAMS: dict[str, InputKind] = {
    "video_guide": "media", "video_mask": "media", "video_guide2": "media", "video_mask2": "media",
    "image_start": "image", "image_end": "image", "image_mask": "image",
}


def is_url(value: str) -> bool:
    return "://" in value[:16]


def resolve_input(value: object, name: str, inputs: TaskInputs, *, kind: InputKind | None = "media") -> Path:
    """A local file for ``value`` (a path or an http/https URL) that the policy allows and whose content is
    ``kind`` (None: any content, for callers that check it themselves, e.g. LoRA files)."""
    if not isinstance(value, str | Path) or not str(value).strip():
        raise InvalidParams(f"params.{name} must be a file path or an http(s) URL, got {value!r}")
    text = str(value).strip()
    path = download(text, name, inputs) if is_url(text) else inputs.policy.check_local(text, name)
    if kind is not None:
        sniff(path, name, kind)
    return path


class _GuardedBackend(httpcore.SyncBackend):
    """Checks the address every connection really reached (a DNS answer can change between the policy's
    look-up and the connect) and keeps the sockets, so the deadline can cut a read that is still waiting."""

    def __init__(self, policy: InputPolicy, name: str) -> None:
        self.policy, self.name = policy, name
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.expired = False

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        stream = super().connect_tcp(host, port, timeout=timeout, local_address=local_address,
                                     socket_options=socket_options)
        sock = stream.get_extra_info("socket")
        peer, peer_port = sock.getpeername()[:2]
        if not self.policy.allows_address(peer, peer_port):
            stream.close()
            raise InvalidParams(f"params.{self.name}: host {host!r} connected to the non-public address {peer}; "
                                "private, loopback and link-local addresses are refused")
        with self.lock:
            self.sockets.append(sock)
            if self.expired:
                self._cut(sock)
        return stream

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            for sock in self.sockets:
                self._cut(sock)

    @staticmethod
    def _cut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def guarded_transport(policy: InputPolicy, name: str) -> tuple[httpx.HTTPTransport, _GuardedBackend]:
    """An httpx transport whose every connection the policy checks at the address really reached (URL inputs,
    webhook deliveries), and its backend (``expire()`` cuts the open sockets)."""
    backend = _GuardedBackend(policy, name)
    transport = httpx.HTTPTransport()
    transport._pool._network_backend = backend  # httpx has no public hook for the network backend
    return transport, backend


def resolve_generation_files(params: Mapping[str, Any], inputs: TaskInputs) -> dict[str, Any]:
    """``params`` with every file param (and ``image_refs``, one or a list) as a checked local path."""
    resolved = dict(params)
    for name, kind in GENERATION_FILE_PARAMS.items():
        if resolved.get(name):
            resolved[name] = str(resolve_input(resolved[name], name, inputs, kind=kind))
    if resolved.get("image_refs"):
        refs = resolved["image_refs"]
        refs = list(refs) if isinstance(refs, list | tuple) else [refs]
        # an already-decoded image (programmatic callers) is no file to check
        resolved["image_refs"] = tuple(str(resolve_input(ref, "image_refs", inputs, kind="image"))
                                       if isinstance(ref, str | Path) else ref for ref in refs)
    return resolved


def download(url: str, name: str, inputs: TaskInputs, *, max_bytes: int | None = None,
             timeout: float = DOWNLOAD_TIMEOUT_SECONDS) -> Path:
    policy = inputs.policy
    max_bytes = policy.max_download_bytes if max_bytes is None else max_bytes
    shown = redact_url(url)
    policy.check_url(url, name)
    work_dir = inputs.work_dir
    target_name = safe_filename(Path(urlsplit(url).path).name or "download")
    target = work_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}_{target_name}"
    if target.is_file():
        return target
    work_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    deadline = time.monotonic() + policy.download_deadline

    too_slow = InputTemporarilyUnavailable(f"params.{name}: downloading {shown} took longer than the "
                                f"{policy.download_deadline:g} s limit")

    def time_left() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise too_slow
        return left

    transport, backend = guarded_transport(policy, name)
    # A server that trickles its headers or body never trips a per-read timeout: at the deadline the
    # sockets are shut down, which ends whatever read is waiting.
    timer = threading.Timer(policy.download_deadline, backend.expire)
    timer.daemon = True
    timer.start()
    try:
        # Redirects are followed by hand: each hop's scheme and host go through the policy again.
        with httpx.Client(follow_redirects=False, transport=transport) as client:
            current = url
            for _ in range(MAX_REDIRECTS + 1):
                with client.stream("GET", current, timeout=min(timeout, time_left())) as response:
                    if response.is_redirect:
                        current = str(response.next_request.url) if response.next_request else ""
                        if urlsplit(current).scheme.lower() not in ("http", "https"):
                            raise InvalidParams(f"params.{name}: {shown} redirects to a non-http(s) URL "
                                                f"{redact_url(current)!r}")
                        policy.check_url(current, name)
                        continue
                    if response.status_code != 200:
                        # 408/429/5xx: the server's trouble, gone on a later attempt more often than not
                        transient = response.status_code in (408, 429) or response.status_code >= 500
                        raise (InputTemporarilyUnavailable if transient else InputUnavailable)(
                            f"params.{name}: GET {shown} returned HTTP {response.status_code}")
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > max_bytes:
                        raise InputUnavailable(f"params.{name}: {shown} is {declared} bytes; the limit is {max_bytes}")
                    received = 0
                    with open(partial, "wb") as handle:
                        for chunk in response.iter_bytes():
                            received += len(chunk)
                            if received > max_bytes:
                                raise InputUnavailable(f"params.{name}: {shown} is larger than the "
                                                       f"{max_bytes}-byte limit")
                            handle.write(chunk)
                            time_left()
                    partial.rename(target)
                    log.info("input_downloaded", name=name, url=shown, bytes=received)
                    return target
            raise InputUnavailable(f"params.{name}: {shown} redirected more than {MAX_REDIRECTS} times")
    except httpx.HTTPError as exc:
        if backend.expired:
            raise too_slow from exc
        raise InputTemporarilyUnavailable(f"params.{name}: could not download {shown}: {redact_url(str(exc))}") from exc
    finally:
        timer.cancel()
        partial.unlink(missing_ok=True)


# For programmatic callers of the engine (WanOrchestrator.generate, wgp.generate_video): trusted code, not a
# row, so any local file is accepted; a URL is still held to the public-address rule.
PREVETTED = InputPolicy(roots=(Path("/"),))


def engine_inputs(output_root: Path, task_id: str) -> TaskInputs:
    """The work folder of ``task_id`` with the PREVETTED policy (see above)."""
    return TaskInputs(task_work_dir(output_root, task_id), PREVETTED)
