"""The API over a real socket: ``tasks serve`` as a process (tokens from the environment, never logged), and
many SSE clients served from one change listener (no database reads per client)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from source.db.models import NewTask
from source.db.sqlite import SqliteTaskStore
from source.web.app import create_app
from tests.helpers import wait_for
from tests.web.live import CountingStore, serve_in_thread, serve_process
from tests.web.sse import wait_for_event

READ_TOKEN = "reader-token-5f2c9a"
WRITE_TOKEN = "writer-token-81d7e3"


def test_tasks_serve_answers_streams_the_queue_and_never_logs_its_tokens(tmp_path):
    db, log = tmp_path / "tasks.db", tmp_path / "serve.log"
    SqliteTaskStore(db).migrate()
    env = {"TASKS_READ_TOKENS": READ_TOKEN, "TASKS_WRITE_TOKENS": WRITE_TOKEN}
    with serve_process(db, tmp_path / "out", log_path=log, env=env) as url:
        writer = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {WRITE_TOKEN}"}, timeout=10)
        reader = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {READ_TOKEN}"}, timeout=10)
        submitted: list[str] = []

        def submit() -> None:
            response = writer.post("/api/tasks", json={"task_type": "ping", "params": {"message": "over http"}})
            assert response.status_code == 201
            submitted.append(response.json()["id"])

        overview = wait_for_event(reader, "/api/events",
                                  lambda name, data: bool(submitted) and any(
                                      t["id"] == submitted[0] for t in data["tasks"]),
                                  on_open=submit)
        assert overview["by_status"]["Queued"] == 1
        assert reader.post("/api/tasks", json={"task_type": "ping"}).status_code == 403
        assert httpx.get(f"{url}/api/tasks", headers={"Authorization": "Bearer wrong-token-1234"}).status_code == 401
        assert reader.get(f"/api/tasks/{submitted[0]}").json()["params"] == {"message": "over http"}
    text = log.read_text()
    assert "task_submitted" in text and "/api/tasks" in text, "requests are logged"
    assert READ_TOKEN not in text and WRITE_TOKEN not in text


def _reads_while_clients_follow(url: str, db, store: CountingStore, hub, clients: int) -> int:
    """``clients`` SSE streams follow the queue while 8 rows arrive; the store calls made meanwhile."""
    marker = f"marker-{clients}"
    done = []

    def follow() -> None:
        with httpx.Client(timeout=30) as client:
            wait_for_event(client, f"{url}/api/events",
                           lambda name, data: any(t["id"] == marker for t in data["tasks"]))
        done.append(1)

    threads = [threading.Thread(target=follow, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    wait_for(lambda: hub.subscribers == clients, timeout=30)
    time.sleep(0.5)  # the connection burst settles
    producer = SqliteTaskStore(db)
    before = store.reads()
    for i in range(8):
        producer.add_task(NewTask("ping", {"n": i}))
        time.sleep(0.25)
    producer.add_task(NewTask("ping", {}, id=marker))
    for thread in threads:
        thread.join(timeout=30)
    reads = store.reads() - before
    producer.close()
    assert len(done) == clients, "every client saw the last row"
    wait_for(lambda: hub.subscribers == 0, timeout=10)  # closed streams stop counting
    return reads


def test_sse_clients_share_one_change_listener_and_add_no_database_reads(tmp_path):
    db = tmp_path / "tasks.db"
    store = CountingStore(SqliteTaskStore(db))
    store.migrate()
    app = create_app(store, output_root=tmp_path)
    with serve_in_thread(app) as url:
        one = _reads_while_clients_follow(url, db, store, app.state.hub, 1)
        many = _reads_while_clients_follow(url, db, store, app.state.hub, 40)
    # Per-client reads would multiply by 40; one listener reads the same whatever the audience.
    print("store reads with 1 and 40 clients:", one, many)
    assert many <= one * 1.5 + 6, (one, many)
    assert store.calls["wait_for_change"] > 0


@pytest.mark.postgres
def test_on_postgres_a_new_row_reaches_the_stream_through_listen(postgres_store, tmp_path):
    app = create_app(postgres_store, output_root=tmp_path, refresh_seconds=60)  # no tick within the test
    new_ids: list[str] = []
    # A 10 s read timeout (under the 15 s SSE ping): a missed wake-up fails the test instead of hanging it.
    with serve_in_thread(app) as url, httpx.Client(timeout=10) as client:
        started = time.monotonic()
        wait_for_event(client, f"{url}/api/events",
                       lambda name, data: bool(new_ids) and any(t["id"] == new_ids[0] for t in data["tasks"]),
                       on_open=lambda: new_ids.append(postgres_store.add_task(NewTask("ping", {}))))
        assert time.monotonic() - started < 10


@pytest.mark.postgres
def test_on_postgres_claims_and_progress_reach_the_task_stream_on_the_refresh_tick(postgres_store, tmp_path):
    app = create_app(postgres_store, output_root=tmp_path, refresh_seconds=0.5)
    task_id = postgres_store.add_task(NewTask("ping", {}))
    with serve_in_thread(app) as url, httpx.Client(timeout=30) as client:
        def claim_and_report() -> None:
            claimed = postgres_store.claim_next_task("web-w", lease_seconds=60)
            assert claimed is not None and claimed.id == task_id
            # Claims and heartbeats send no NOTIFY: the hub's refresh tick carries them.
            postgres_store.heartbeat(task_id, "web-w", lease_seconds=60, progress=0.5)

        row = wait_for_event(client, f"{url}/api/tasks/{task_id}/events",
                             lambda name, data: name == "task" and data["progress"] == 0.5,
                             on_open=claim_and_report)
        assert row["status"] == "In Progress" and row["worker_id"] == "web-w" and row["children"] == []
