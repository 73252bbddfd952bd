"""Worker settings: what the CLI flags decide, passed down to the loop and to handlers."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from source.db.models import AFFINITY_WINDOW_SECONDS, UNRESTRICTED, Capabilities
from source.retry import TASK_RETRY, Backoff
from source.task_files.paths import LEGACY_FILES
from source.task_files.policy import InputPolicy, default_roots

# The share of an interval for which a housekeeping turn stays taken (WorkerSettings.housekeeping_turn_seconds).
HOUSEKEEPING_TURN_SHARE = 0.8


def load_env_file(path: Path | None = None) -> bool:
    """Load ``.env`` from the working directory (as the older worker did); a variable already set in the real
    environment always wins. Returns whether a file was read."""
    from dotenv import load_dotenv

    path = path or Path.cwd() / ".env"
    return path.is_file() and load_dotenv(path, override=False)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerSettings:
    worker_id: str = field(default_factory=default_worker_id)
    main_output_dir: Path = Path("outputs")
    poll_interval: float = 10.0
    lease_seconds: float = 60.0
    shutdown_grace: float = 30.0
    # Seconds a task may run: None = scaled by the task's model (source/worker/limits.py), 0 = no limit.
    task_timeout: float | None = None
    # Child rows one orchestrator may create (a travel of N images creates N rows).
    max_children_per_task: int = 200
    affinity_window: float = AFFINITY_WINDOW_SECONDS
    apply_reward_lora: bool = False
    colour_match_videos: bool = False
    mask_active_frames: bool = True
    input_roots: tuple[Path, ...] = ()
    allow_private_urls: bool = False
    # Retention: a task's _work/<task> folder is deleted when it ends unless kept (worker.py --debug).
    keep_work_dirs: bool = False
    # A row failing for a transient reason waits this schedule before it runs again (run_after).
    retry_backoff: Backoff = TASK_RETRY
    # magic_edit's in-scene LoRA file name (in the model's LoRA folder); None = the first InScene-* file.
    in_scene_lora: str | None = None
    # The older worker's conventions, for frontends written against it (both off by default):
    # an unknown task type with params.model is generated as generate_video;
    legacy_unknown_task_types: bool = False
    # a failed row's error text also goes into output_location (every backend).
    legacy_output_location: bool = False
    # With legacy_output_location on SQLite: <db folder>/public; outputs are published as "files/<name>".
    legacy_public_root: Path | None = None

    # A row given back on shutdown this many times without counting the attempt; after that it counts.
    free_shutdown_requeues: int = 3
    # What this worker may claim (--task-types, --models, the GPU's memory: source/worker/capabilities.py).
    capabilities: Capabilities = UNRESTRICTED
    # reigh-worker's idle release (--idle-release-minutes): exit with EXIT_IDLE_RELEASE after this many seconds
    # without a claim (0 = never), not before this many seconds after start (--idle-onboarding-grace-seconds).
    idle_release_seconds: float = 0.0
    idle_release_grace_seconds: float = 60.0

    @property
    def input_policy(self) -> InputPolicy:
        """Local inputs under the output root plus ``input_roots`` (the working directory when empty);
        URLs to public addresses only unless ``allow_private_urls``."""
        roots = default_roots(self.main_output_dir, tuple(Path(p) for p in self.input_roots))
        if self.legacy_public_root is not None:  # other rows' outputs in the older "files/<name>" form
            roots = (*roots, self.legacy_public_root / LEGACY_FILES)
        return InputPolicy(roots=roots, allow_private_urls=self.allow_private_urls)

    @property
    def heartbeat_interval(self) -> float:
        return max(0.2, self.lease_seconds / 4)

    @property
    def housekeeping_interval(self) -> float:
        """How often an idle worker reclaims expired leases and cascades failed dependencies: no row
        change announces an expired lease, so it has to be looked for."""
        return max(0.25, min(5.0, self.lease_seconds / 4, self.poll_interval))

    @property
    def housekeeping_turn_seconds(self) -> float:
        """How long the fleet's housekeeping turn stays taken (store.housekeeping_turn): a little under the
        interval, so that a lone worker whose calls reach the server unevenly still gets every turn instead
        of every other one."""
        return HOUSEKEEPING_TURN_SHARE * self.housekeeping_interval
