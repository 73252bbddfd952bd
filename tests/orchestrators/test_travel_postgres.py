"""The travel workflow on Postgres: two real worker processes sharing one schema finish a 3-image run,
and the last child completes the orchestrator row."""

from __future__ import annotations

from pathlib import Path

import pytest

from source.db.models import NewTask, TaskStatus
from source.media.video import read_video
from tests.helpers import start_worker, wait_for
from tests.orchestrators.conftest import travel_params

pytestmark = pytest.mark.postgres


def test_travel_run_completes_on_postgres_with_two_workers(postgres_store, postgres_schema_url, tmp_path, keyframes):
    out = tmp_path / "out"
    orchestrator = postgres_store.add_task(NewTask("travel_orchestrator", travel_params(keyframes)))
    workers = [start_worker(postgres_schema_url, out, "--worker", name, "--lease-seconds", "5", "--input-roots", str(tmp_path),
                            log_path=tmp_path / f"{name}.log") for name in ("pgA", "pgB")]
    try:
        wait_for(lambda: postgres_store.get_task(orchestrator).status.is_final, timeout=240, interval=0.2)
    finally:
        for proc in workers:
            proc.terminate()
            proc.wait(timeout=30)
    parent = postgres_store.get_task(orchestrator)
    assert parent.status is TaskStatus.COMPLETE, (parent.error_message, (tmp_path / "pgA.log").read_text()[-2000:])
    children = {row.child_key: row for row in postgres_store.list_child_tasks(orchestrator)}
    assert sorted(children) == ["segment_000", "segment_001", "stitch"]
    assert all(row.status is TaskStatus.COMPLETE for row in children.values())
    assert parent.output_location == children["stitch"].output_location and Path(parent.output_location).is_file()
    assert len(read_video(parent.output_location, "final")) == 9 + 9 - 4
