"""A fleet of real worker processes with a chaos supervisor that ``kill -9``s one now and then and
starts a replacement, the way systemd or Kubernetes would restart a crashed worker."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import log_events, start_worker


@dataclass
class WorkerFleet:
    db: Path | str  # a SQLite file or a Postgres URL (tests.helpers.worker_command)
    output_dir: Path
    log_dir: Path
    size: int
    worker_args: tuple[str, ...] = ()
    kill_every: tuple[float, float] = (1.0, 3.0)
    # A worker younger than this is left alone: it is still importing, and killing it tests nothing.
    min_age_before_kill: float = 1.0
    # How long stop() waits at most for a (re)started worker to import and install its signal handlers.
    startup_seconds: float = 60.0
    seed: int = 0
    # The In Progress row ids by worker id. When given, victims are drawn from the workers holding a row
    # (a kill between two tasks, or of a worker still importing, tests nothing), and the rows a killed
    # worker really left behind are recorded in ``orphaned``.
    held_rows: Callable[[], dict[str, list[str]]] | None = None
    orphaned: list[str] = field(default_factory=list)
    kills: int = 0
    starts: int = 0
    _procs: dict[int, tuple[subprocess.Popen, float, str]] = field(default_factory=dict)
    _chaos: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> WorkerFleet:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for slot in range(self.size):
            self._spawn(slot)
        return self

    def _spawn(self, slot: int) -> None:
        self.starts += 1
        worker_id = f"w{slot}-{self.starts}"
        proc = start_worker(self.db, self.output_dir, "--worker", worker_id, *self.worker_args,
                            log_path=self.log_dir / f"{worker_id}.log")
        self._procs[slot] = (proc, time.monotonic(), worker_id)

    # -- chaos ---------------------------------------------------------------------------------------
    def start_chaos(self) -> None:
        self._chaos.set()
        self._thread = threading.Thread(target=self._supervise, name="chaos", daemon=True)
        self._thread.start()

    def stop_chaos(self) -> None:
        self._chaos.clear()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _supervise(self) -> None:
        rng = random.Random(self.seed)
        while self._chaos.is_set():
            time.sleep(rng.uniform(*self.kill_every))
            # Until a kill lands inside a task (or chaos ends): nobody may qualify yet, or the victim
            # may have finished its row between the look and the kill.
            while self._chaos.is_set() and not self._kill_one(rng):
                time.sleep(0.05)

    def _kill_one(self, rng: random.Random) -> bool:
        """Kill a random eligible worker and restart its slot; True when it died holding a row."""
        slot = self._pick_victim(rng)
        if slot is None:
            return False
        proc, _, worker_id = self._procs[slot]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.kills += 1
        self._spawn(slot)  # the supervisor restarts it at once (Restart=always)
        if self.held_rows is None:
            return True
        # A statement the worker sent just before it died (its completion) may still commit on the server, late
        # on a loaded machine: a row is orphaned only if it is still held after 0.5 s and again after 2 s.
        left = set(self.held_rows().get(worker_id, []))
        for pause in (0.5, 1.5):
            if not left:
                break
            time.sleep(pause)
            left &= set(self.held_rows().get(worker_id, []))
        left = sorted(left)
        self.orphaned.extend(left)
        return bool(left)

    def _pick_victim(self, rng: random.Random) -> int | None:
        now = time.monotonic()
        candidates = [slot for slot, (_, born, _) in self._procs.items() if now - born >= self.min_age_before_kill]
        if self.held_rows is not None:
            busy = self.held_rows()
            candidates = [slot for slot in candidates if self._procs[slot][2] in busy]
        return rng.choice(candidates) if candidates else None

    # -- end -----------------------------------------------------------------------------------------
    def stop(self, timeout: float = 30) -> list[int]:
        """SIGTERM every live worker (graceful shutdown) and return their exit codes."""
        self.stop_chaos()
        # A worker the chaos just restarted may still be importing, before its graceful handlers exist: wait
        # until each live one has logged worker_started, which it does after installing them (this tests the
        # shutdown of running workers, not of starting ones; a loaded machine takes well over 5 s to import).
        deadline = time.monotonic() + self.startup_seconds
        for proc, _, worker_id in self._procs.values():
            log_path = self.log_dir / f"{worker_id}.log"
            while proc.poll() is None and time.monotonic() < deadline and not (
                    log_path.exists() and '"worker_started"' in log_path.read_text(errors="replace")):
                time.sleep(0.1)
        procs = [entry[0] for entry in self._procs.values()]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=timeout))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        return codes

    def events(self) -> list[dict]:
        """Every JSON log event of every worker this fleet ever started."""
        return [event for path in sorted(self.log_dir.glob("*.log")) for event in log_events(path.read_text())]
