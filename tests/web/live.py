"""A real HTTP server around the web app (uvicorn in a thread, or ``tasks serve`` in a process), and a store
that counts the calls made to it (the load figures: database work per SSE client)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tests.helpers import REPO_ROOT, _worker_env, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """``app`` on a real socket; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None,
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextlib.contextmanager
def serve_process(db: Path, output_dir: Path, *extra: str, log_path: Path,
                  env: dict[str, str] | None = None) -> Iterator[str]:
    """``tasks serve`` as an operator runs it; yields its base URL once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "source.cli.tasks", "--log-format", "json", "serve", "--db-file", str(db),
               "--main-output-dir", str(output_dir), "--port", str(port), *extra]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=_worker_env(env), stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, f"tasks serve exited: {log_path.read_text()[-2000:]}"
        try:
            return httpx.get(f"{url}/openapi.json", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(answers, timeout=30, interval=0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class CountingStore:
    """A real store whose every method call is counted by name (``wait_for_change`` included)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted

    def reads(self) -> int:
        """Calls that query the database (everything but waiting for a change)."""
        with self._lock:
            return sum(n for name, n in self.calls.items() if name != "wait_for_change")
