"""Arbitrary params JSON for every task type: the worker never crashes, every row ends Complete or
Failed with a message, and memory stays bounded."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3

import psutil
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from source.db.models import NewTask, TaskStatus
from source.routing import ROUTES, known_task_types
from source.worker.loop import Worker
from source.worker.settings import WorkerSettings
from tests.hardening.raw_rows import POLL_INTERVAL, drain
from tests.helpers import generation_queue, in_process_worker

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

# Every task type the routing table knows, legacy aliases included, so a newly added type is fuzzed
# without touching this file. Generation types run with the hub offline: a row naming a real model then
# fails fast with "weights not in the local cache" instead of downloading gigabytes.
FUZZED_TYPES = known_task_types()
# One resident model for the whole module, as in one worker process (the rows here are many and small).
FUZZ_QUEUE = generation_queue()

# Hand-picked hostile params every type must survive, whatever Hypothesis happens to draw.
HOSTILE_PARAMS = [
    "null", "[]", '"a string"', "{broken", "", '{"a": ' * 300 + "1" + "}" * 300,
    json.dumps({"prompt": 12, "model": None, "resolution": [1, 2, 3], "video_length": "many"}),
    json.dumps({"prompt": "ü🎬\u0000 ∞", "resolution": "99999999x99999999", "video_length": 10**30, "steps": -5}),
    json.dumps({"model": "../../etc/passwd", "prompt": "x", "output_dir": "/etc", "custom_output_dir": "../.."}),
    json.dumps({"model": "tiny_t2v", "prompt": "x", "resolution": "4096x4096", "video_length": 1025}),
    json.dumps({"model": "tiny_t2v", "prompt": "x", "batch_size": 10**6, "num_inference_steps": 10**9}),
    json.dumps({"orchestrator_details": {"input_image_paths_resolved": ["/etc/passwd"] * 3, "num_new_segments": 10**9},
                "frames": 2**62, "frame_index": -(2**62), "input_video_path": "file:///etc/passwd"}),
]


def run_row(store, out, task_type: str, params_text: str):
    task_id = store.add_task(NewTask(task_type, {}))
    store._conn().execute("UPDATE tasks SET params = ? WHERE id = ?", (params_text, task_id))
    worker = in_process_worker(store, WorkerSettings(worker_id="fuzz", main_output_dir=out, task_timeout=20,
                                                     lease_seconds=30), FUZZ_QUEUE, exit_when_idle=True)
    assert worker.run() == 0
    return store.get_task(task_id)


def assert_ended_cleanly(row) -> None:
    assert row.status in (TaskStatus.COMPLETE, TaskStatus.FAILED), row
    if row.status is TaskStatus.FAILED:
        assert row.error_message and len(row.error_message) <= 4000
        # a known bad input is a message for the producer, not a crash report
        assert "traceback" not in (row.result or {}), (row.task_type, row.error_message)


@pytest.fixture
def hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_every_routed_type_is_fuzzed():
    assert set(ROUTES) <= set(FUZZED_TYPES)
    assert {"extract_frame", "rife_interpolate_images", "generate_openpose", "generate_depth", "travel_orchestrator",
            "different_perspective_orchestrator", "magic_edit", "t2v", "flux", "ping"} <= set(FUZZED_TYPES)


@pytest.mark.parametrize("task_type", FUZZED_TYPES)
def test_hostile_params_fail_every_task_type_with_a_message(sqlite_store, tmp_path, hub_offline, task_type):
    for params_text in HOSTILE_PARAMS:
        assert_ended_cleanly(run_row(sqlite_store, tmp_path / "out", task_type, params_text))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(task_type=st.sampled_from([*FUZZED_TYPES, "no_such_type"]), params=raw_params)
def test_arbitrary_params_never_crash_the_worker(sqlite_store, tmp_path, hub_offline, task_type, params):
    row = run_row(sqlite_store, tmp_path / "out", task_type, params)
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


def test_memory_stays_bounded_over_hostile_rows_of_every_task_type(sqlite_store, tmp_path, hub_offline):
    process = psutil.Process(os.getpid())
    worker_settings = WorkerSettings(worker_id="mem-all", main_output_dir=tmp_path / "out", task_timeout=20)

    def run_round() -> None:
        for task_type in FUZZED_TYPES:
            for params_text in HOSTILE_PARAMS:
                task_id = sqlite_store.add_task(NewTask(task_type, {}))
                sqlite_store._conn().execute("UPDATE tasks SET params = ? WHERE id = ?", (params_text, task_id))
        in_process_worker(sqlite_store, worker_settings, FUZZ_QUEUE, exit_when_idle=True).run()

    run_round()  # warm-up: imports, the tiny model the hostile rows name, caches
    baseline = process.memory_info().rss
    for _ in range(2):
        run_round()
    rows = 3 * len(FUZZED_TYPES) * len(HOSTILE_PARAMS)
    growth_mb = (process.memory_info().rss - baseline) / 2**20
    assert growth_mb < 100, f"RSS grew {growth_mb:.1f} MiB over {rows * 2 // 3} hostile rows"
    counts = sqlite_store.stats().by_status
    assert set(counts) <= {"Complete", "Failed"} and sum(counts.values()) == rows, counts


# -- raw column values: what a producer with plain SQL can store, bytes and wrong types included -----------
# (kind, value): "blob" binds bytes, "text_bytes" stores the same bytes as TEXT (not necessarily UTF-8),
# "value" binds the Python value as it is (a wrong type for the column, NULL, ...).
SQLITE_COLUMNS = ["id", "task_type", "params", "status", "dependant_on", "priority", "attempts", "max_attempts",
                  "project_id", "awaiting_children", "parent_task_id", "child_key", "created_at"]
sqlite_raw = (
    st.tuples(st.just("blob"), st.binary(max_size=24))
    | st.tuples(st.just("text_bytes"), st.binary(max_size=24) | st.just(b'{"m":"\x80\xff"}'))
    | st.tuples(st.just("value"), st.none() | st.text(max_size=24) | st.integers(-(2**63), 2**63 - 1)
                | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(["high", "Queued", "queued", "{}"]))
)
# Postgres columns are typed: the raw values are the right type with hostile content (or the wrong type,
# which the database refuses at write).
postgres_raw = {
    "params": json_values | st.just(json.loads('{"a": ' * 900 + "1" + "}" * 900)) | st.text(max_size=20),
    "task_type": st.text(max_size=30),
    "priority": st.integers(-(2**31), 2**31 - 1),
    "attempts": st.integers(-(2**31), 2**31 - 1),
    "max_attempts": st.integers(-(2**31), 2**31 - 1),
    "status": st.sampled_from(["queued", "Queued", "Complete", "In Progress", ""]),
    "dependant_on": st.text(max_size=30),
    "id": st.text(min_size=1, max_size=300),
    "awaiting_children": st.booleans(),
    "project_id": st.text(max_size=30),
}
ENDED = {"Complete", "Failed", "Cancelled"}


def _mutate_sqlite(backend, rowid: int, column: str, kind: str, value) -> None:
    placeholder = "CAST(? AS TEXT)" if kind == "text_bytes" else "?"
    # refused by the database (NOT NULL, the id length limit, a duplicate): nothing stored
    with contextlib.suppress(sqlite3.IntegrityError):
        backend.sql(f"UPDATE tasks SET {column} = {placeholder} WHERE rowid = ?", value, rowid)


def _mutate_postgres(backend, task_id: str, column: str, value) -> str:
    cast = "::jsonb" if column == "params" else ""
    try:
        backend.sql(f"UPDATE tasks SET {column} = %s{cast} WHERE id = %s",
                    json.dumps(value) if column == "params" else value, task_id)
    except psycopg.Error:
        return task_id  # refused by the database (a check, NUL in text, ...): nothing stored
    return value if column == "id" else task_id


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_raw_column_values_never_hold_up_the_good_row_behind(raw_backend, tmp_path, data):
    """Every hostile row ends (Complete, Failed or Cancelled), and the good row queued behind it completes
    within one poll interval, on both backends."""
    bad = raw_backend.add_old(params={"message": "bad"})
    if raw_backend.name == "sqlite":
        rowid = raw_backend.sql("SELECT rowid FROM tasks WHERE id = ?", bad)[0][0]
        columns = data.draw(st.dictionaries(st.sampled_from(SQLITE_COLUMNS), sqlite_raw, min_size=1, max_size=3))
        for column, (kind, value) in columns.items():
            _mutate_sqlite(raw_backend, rowid, column, kind, value)
        where, key = "rowid = ?", rowid
    else:
        columns = data.draw(st.fixed_dictionaries({}, optional=postgres_raw).filter(bool))
        for column, value in columns.items():
            bad = _mutate_postgres(raw_backend, bad, column, value)
        where, key = "id = %s", bad
    good = raw_backend.store.add_task(NewTask("ping", {"message": "good"}))

    elapsed = drain(raw_backend.store, tmp_path / "out")

    assert raw_backend.store.get_task(good).status is TaskStatus.COMPLETE
    assert elapsed < POLL_INTERVAL
    (status,) = raw_backend.sql(f"SELECT status FROM tasks WHERE {where}", key)[0]
    assert (status.decode("utf-8", "replace") if isinstance(status, bytes) else status) in ENDED, (columns, status)
