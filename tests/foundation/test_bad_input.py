"""A worker survives every bad row: each one ends Failed with a specific stored message."""

from __future__ import annotations

import sqlite3

import pytest

from source.db.models import NewTask, TaskStatus
from source.errors import NotImplementedTaskType
from source.routing import ROUTES, canonical_task_type, resolve_handler
from tests.helpers import run_worker

# (task_type, raw params text, a fragment the stored error must contain)
BAD_ROWS = [
    ("ping", "{not json", "params is not valid JSON: Expecting property name"),
    ("ping", "[1, 2, 3]", "params must be a JSON object, got an array"),
    ("ping", '"just a string"', "params must be a JSON object, got a string"),
    ("ping", "null", "params must be a JSON object, got null"),
    ("ping", "42", "params must be a JSON object, got a number"),
    ("ping", "[" * 100_000 + "]" * 100_000, "params is nested too deeply to parse"),
    ("ping", '{"x": "' + "y" * 1_000_001 + '"}', "the limit is 1000000"),
    ("render_magic", "{}", "unknown task type 'render_magic'; known task types: "),
    ("", "{}", "unknown task type ''"),
    ("x" * 500, "{}", "unknown task type 'xxxxxxxx"),
    ("ping", '{"sleep_seconds": "abc"}', "params.sleep_seconds: Input should be a valid number"),
    ("ping", '{"sleep_seconds": -1}', "params.sleep_seconds: Input should be greater than or equal to 0"),
    ("ping", '{"sleep_seconds": 1e12}', "params.sleep_seconds: Input should be less than or equal to 3600"),
    ("ping", '{"sleep_seconds": NaN}', "params.sleep_seconds:"),
    ("ping", '{"sleep_seconds": [1]}', "params.sleep_seconds: Input should be a valid number"),
    ("ping", '{"sleep_seconds": {"n": 1}}', "params.sleep_seconds: Input should be a valid number"),
    ("ping", '{"message": 42}', "params.message: Input should be a valid string (got 42)"),
    ("ping", '{"message": "' + "m" * 10_001 + '"}', "params.message: String should have at most 10000 characters"),
]


def test_every_bad_row_fails_with_a_specific_message_and_the_worker_goes_on(sqlite_store, tmp_path):
    conn = sqlite3.connect(sqlite_store.path)
    for index, (task_type, params, _) in enumerate(BAD_ROWS):
        conn.execute(
            "INSERT INTO tasks (id, task_type, params, status, priority, created_at) "
            "VALUES (?, ?, ?, 'Queued', 1, strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
            (f"bad-{index:02d}", task_type, params),
        )
    conn.commit()
    good = sqlite_store.add_task(NewTask("ping", {"message": "still alive"}))  # priority 0: runs last

    result = run_worker(sqlite_store.path, tmp_path / "out", "--once")

    assert result.returncode == 0, result.stderr[-3000:]
    for index, (_, _, fragment) in enumerate(BAD_ROWS):
        row = sqlite_store.get_task(f"bad-{index:02d}")
        assert row.status is TaskStatus.FAILED, (index, row.status)
        assert fragment in row.error_message, (index, row.error_message[:300])
        assert len(row.error_message) <= 4000
    assert sqlite_store.get_task(good).status is TaskStatus.COMPLETE
    assert len({sqlite_store.get_task(f"bad-{i:02d}").error_message for i in range(len(BAD_ROWS))}) >= 15


def test_a_contract_task_type_without_a_handler_says_it_is_not_implemented_yet(monkeypatch):
    monkeypatch.setitem(ROUTES, "generate_depth", None)
    with pytest.raises(NotImplementedTaskType, match="task type 'generate_depth' is not implemented yet"):
        resolve_handler("generate_depth")


def test_legacy_task_types_are_accepted_as_generate_video():
    assert canonical_task_type("wgp") == "generate_video"
    assert canonical_task_type("standard_wgp_task") == "generate_video"
    assert canonical_task_type("t2v") == "t2v"
