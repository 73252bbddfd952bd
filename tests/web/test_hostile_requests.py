"""What a hostile page or producer sends to ``tasks serve`` (docs/security.md): a form on another port of the
same host, pictures that explode when decoded, files that do not decode, params past the worker's limit, ids
with a slash. Through FastAPI's test client on a real SQLite file."""

from __future__ import annotations

import json
import re
import time

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

import source.cli.tasks as task_cli
from source.db.models import MAX_PARAMS_CHARS, NewTask, TaskStatus
from source.web.app import create_app
from source.web.auth import Tokens
from source.web.body_limit import MAX_BODY_BYTES

WRITER = "writer-secret-1"


@pytest.fixture
def out(tmp_path):
    folder = tmp_path / "outputs"
    folder.mkdir()
    return folder


def _page_token(client: TestClient) -> str:
    return re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', client.get("/").text).group(1)


@pytest.mark.parametrize("auth", ["cookie", "open loopback server"])
def test_a_page_of_another_origin_cannot_write_through_the_browsers_credentials(sqlite_store, out, auth):
    tokens = Tokens.from_values([], [WRITER]) if auth == "cookie" else None
    with TestClient(create_app(sqlite_store, output_root=out, tokens=tokens)) as client:
        if tokens:
            client.post("/login", data={"token": WRITER})  # the cookie a browser then sends with every request
        queued = sqlite_store.add_task(NewTask("ping", {}))
        own = "http://testserver"
        attempts = {
            "form on another port": {"Origin": "http://testserver:8001"},
            "another subdomain": {"Origin": "http://evil.testserver"},
            "referer only, another port": {"Referer": "http://testserver:8001/attack.html"},
            "sandboxed output page": {"Origin": "null"},
            "own origin, no token": {"Origin": own},
            "own origin, wrong token": {"Origin": own, "X-CSRF-Token": "0" * 64},
        }
        for name, headers in attempts.items():
            response = client.post(f"/api/tasks/{queued}/cancel", headers=headers)
            assert response.status_code == 403, (name, response.text)
            submitted = client.post("/api/tasks", json={"task_type": "ping"}, headers=headers)
            assert submitted.status_code == 403, name
        assert sqlite_store.get_task(queued).status is TaskStatus.QUEUED
        assert len(sqlite_store.list_tasks()) == 1

        page = {"Origin": own, "X-CSRF-Token": _page_token(client)}  # what app.js sends
        assert client.post(f"/api/tasks/{queued}/cancel", headers=page).status_code == 200
        assert sqlite_store.get_task(queued).status is TaskStatus.CANCELLED
        # a client that is not a browser (no Origin, no Referer), or one with the bearer header, needs no page token
        bearer = {"Authorization": f"Bearer {WRITER}", "Origin": "http://testserver:8001"} if tokens else {}
        assert client.post(f"/api/tasks/{queued}/retry", headers=bearer).status_code == 200


def _finished_with_output(store, path) -> str:
    task_id = store.add_task(NewTask("ping", {}))
    store.claim_next_task("w", lease_seconds=60)
    store.complete_task(task_id, "w", output_location=str(path), result=None)
    return task_id


def test_thumbnails_refuse_pictures_past_the_pixel_cap_and_files_that_do_not_decode(sqlite_store, out):
    bomb = out / "bomb.png"  # 144 Mpx declared in a small file: 800 MB once decoded
    Image.new("1", (12000, 12000)).save(bomb)
    assert bomb.stat().st_size < 200_000
    corrupt = out / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\xde\xad\xbe\xef" * 4000)
    not_png = out / "text.png"
    not_png.write_text("not a picture")
    fine = out / "fine.png"
    Image.new("RGB", (640, 480), (200, 10, 10)).save(fine)
    with TestClient(create_app(sqlite_store, output_root=out)) as client:
        started = time.monotonic()
        response = client.get(f"/api/tasks/{_finished_with_output(sqlite_store, bomb)}/thumbnail")
        assert response.status_code == 413 and "12000x12000" in response.json()["detail"]
        assert time.monotonic() - started < 5  # refused from the header, nothing decoded
        for broken in (corrupt, not_png):
            response = client.get(f"/api/tasks/{_finished_with_output(sqlite_store, broken)}/thumbnail")
            assert response.status_code == 422 and "does not decode" in response.json()["detail"], broken
        response = client.get(f"/api/tasks/{_finished_with_output(sqlite_store, fine)}/thumbnail")
        assert response.status_code == 200 and Image.open(out / ".thumbnails" / next(
            p.name for p in (out / ".thumbnails").glob("*.jpg"))).width == 320


def test_params_past_the_workers_limit_are_refused_at_submission_over_http_and_by_tasks_add(sqlite_store, out,
                                                                                         tmp_path):
    too_long = {"prompt": "a cat", "padding": "x" * MAX_PARAMS_CHARS}
    many = {"frames": [0] * 1_000_000}
    with TestClient(create_app(sqlite_store, output_root=out)) as client:
        for params in (too_long, many):
            response = client.post("/api/tasks", json={"task_type": "ping", "params": params})
            assert response.status_code == 422, response.text[:300]
            problem = response.json()["detail"][0]
            assert problem["loc"] == ["body", "params"] and f"the limit is {MAX_PARAMS_CHARS}" in problem["msg"]
        huge = b'{"task_type": "ping", "params": {"p": "' + b"y" * MAX_BODY_BYTES + b'"}}'
        response = client.post("/api/tasks", content=huge, headers={"Content-Type": "application/json"})
        assert response.status_code == 413
    assert sqlite_store.list_tasks() == []

    file = tmp_path / "big.json"
    file.write_text(json.dumps(too_long))
    result = CliRunner().invoke(task_cli.cli, ["add", "--db-file", str(sqlite_store.path), "ping", f"@{file}"])
    assert result.exit_code == 2 and f"the limit is {MAX_PARAMS_CHARS}" in result.output
    assert sqlite_store.list_tasks() == []


def test_ids_with_a_slash_are_reachable_by_every_route(sqlite_store, out):
    with TestClient(create_app(sqlite_store, output_root=out)) as client:
        assert client.post("/api/tasks", json={"task_type": "ping", "id": "teamA/job1"}).status_code == 201
        assert client.get("/api/tasks/teamA%2Fjob1").json()["id"] == "teamA/job1"
        assert client.get("/tasks/teamA%2Fjob1").status_code == 200
        assert client.post("/api/tasks/teamA%2Fjob1/cancel").json()["status"] == "Cancelled"
        assert client.post("/api/tasks/teamA%2Fjob1/retry").json()["status"] == "Queued"
        assert client.get("/api/tasks/teamA%2Fjob1/output").json()["detail"] == "task teamA/job1 has no output"
