"""JSON's Infinity and NaN parse as floats: each is refused naming its field, by a real worker claiming the row
(before, flow_shift=Infinity completed with an all-black video and guidance_scale=NaN acted as no guidance)."""

from __future__ import annotations

import sqlite3

from source.db.models import TaskStatus
from source.db.sqlite import SqliteTaskStore
from tests.helpers import run_worker

CASES = {
    "flow_shift": ('t2v', '{"prompt": "a cat", "model": "tiny_t2v", "flow_shift": Infinity}',
                   "params.flow_shift must be a finite number, got inf"),
    "guidance_scale": ('t2v', '{"prompt": "a cat", "model": "tiny_t2v", "guidance_scale": NaN}',
                       "params.guidance_scale must be a finite number, got nan"),
    "text_infinity": ('t2v', '{"prompt": "a cat", "model": "tiny_t2v", "guidance_scale": "-inf"}',
                      "params.guidance_scale must be a finite number, got '-inf'"),
    "lora_multiplier": ('t2v', '{"prompt": "a cat", "model": "tiny_t2v", "activated_loras": ["x.safetensors"], '
                               '"loras_multipliers": "inf"}', "loras_multipliers: 'inf' is not a finite number"),
    "additional_lora": ('t2v', '{"prompt": "a cat", "model": "tiny_t2v", '
                               '"additional_loras": {"https://example.com/x.safetensors": -Infinity}}',
                        "params.additional_loras['https://example.com/x.safetensors']: -inf is not a finite number"),
    "handler_model": ('ping', '{"sleep_seconds": NaN}', "sleep_seconds"),
    "segment": ('travel_segment', '{"flow_shift": Infinity}', "flow_shift"),
}


def test_non_finite_numbers_fail_the_row_naming_the_field(tmp_path):
    db = tmp_path / "tasks.db"
    store = SqliteTaskStore(db)
    store.migrate()
    store.close()
    with sqlite3.connect(db) as conn:  # the text a producer's JSON encoder writes for float('inf') / nan
        for name, (task_type, params, _) in CASES.items():
            conn.execute("INSERT INTO tasks (id, task_type, params, status, created_at, updated_at) "
                         "VALUES (?, ?, ?, 'Queued', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), "
                         "strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))", (name, task_type, params))
    result = run_worker(db, tmp_path / "out", "--once")
    assert result.returncode == 0, result.stderr[-2000:]
    store = SqliteTaskStore(db)
    try:
        for name, (_, _, expected) in CASES.items():
            row = store.get_task(name)
            assert row.status is TaskStatus.FAILED, (name, row.status, row.result)
            assert expected in row.error_message, (name, row.error_message)
            assert "finite" in row.error_message, (name, row.error_message)
    finally:
        store.close()
