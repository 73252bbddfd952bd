"""Arbitrary params JSON for every task type: the worker never crashes, every row ends Complete or
Failed with a message, and memory stays bounded."""

from __future__ import annotations

import json
import os

import psutil
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from source.db.models import NewTask, TaskStatus
from source.routing import ROUTES
from source.settings import WorkerSettings
from source.worker_loop import Worker

# Names producers really send, so the fuzzer reaches past "unknown key" into each handler's checks.
PARAM_NAMES = [
    "prompt", "negative_prompt", "resolution", "video_length", "steps", "num_inference_steps", "seed", "model",
    "guidance_scale", "flow_shift", "sample_solver", "activated_loras", "loras_multipliers", "additional_loras",
    "video_guide", "video_mask", "image_refs", "image_start", "image_end", "sleep_seconds", "message",
    "frame_index", "input_video_task_id", "input_video_path", "input_image_path", "input_image_path1",
    "input_image_path2", "frames", "output_dir", "output_path", "orchestrator_details", "timeout_seconds",
]

json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
params_objects = st.dictionaries(st.sampled_from(PARAM_NAMES) | st.text(max_size=12), json_values, max_size=6)
raw_params = params_objects.map(json.dumps) | json_values.map(json.dumps) | st.text(max_size=30)

# Types whose handler is built (the others fail with "not implemented yet", also a valid outcome). Real
# generation is left out here: with an arbitrary valid prompt it would try to fetch real weights.
FUZZED_TYPES = sorted(
    t for t, target in ROUTES.items() if target is not None and not target.startswith("source.generation:")
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(task_type=st.sampled_from([*FUZZED_TYPES, "no_such_type"]), params=raw_params)
def test_arbitrary_params_never_crash_the_worker(sqlite_store, tmp_path, task_type, params):
    task_id = sqlite_store.add_task(NewTask(task_type, {}))
    conn = sqlite_store._conn()
    conn.execute("UPDATE tasks SET params = ? WHERE id = ?", (params, task_id))
    worker = Worker(sqlite_store, WorkerSettings(worker_id="fuzz", main_output_dir=tmp_path / "out",
                                                 task_timeout=20, lease_seconds=30), exit_when_idle=True)
    assert worker.run() == 0
    row = sqlite_store.get_task(task_id)
    assert row.status in (TaskStatus.COMPLETE, TaskStatus.FAILED), row
    if row.status is TaskStatus.FAILED:
        assert row.error_message and len(row.error_message) <= 4000


def test_memory_stays_bounded_over_many_bad_rows(sqlite_store, tmp_path):
    process = psutil.Process(os.getpid())
    worker_settings = WorkerSettings(worker_id="mem", main_output_dir=tmp_path / "out")
    bad = ["[" * 50_000 + "]" * 50_000, '{"sleep_seconds": "' + "x" * 200_000 + '"}', "{broken", '{"a": ' * 1000]

    def run_batch() -> None:
        for index in range(200):
            task_id = sqlite_store.add_task(NewTask("ping", {}))
            sqlite_store._conn().execute("UPDATE tasks SET params = ? WHERE id = ?", (bad[index % len(bad)], task_id))
        Worker(sqlite_store, worker_settings, exit_when_idle=True).run()

    run_batch()  # warm-up: imports, caches
    baseline = process.memory_info().rss
    for _ in range(3):
        run_batch()
    growth_mb = (process.memory_info().rss - baseline) / 2**20
    assert growth_mb < 50, f"RSS grew {growth_mb:.1f} MiB over 600 bad rows"
    assert sqlite_store.stats().by_status == {"Failed": 800}
