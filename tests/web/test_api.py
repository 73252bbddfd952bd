"""The HTTP API through FastAPI's test client, on a real SQLite file: submit (the checks of ``tasks add``),
read, list, cancel, retry, tokens and scopes, output files from the output root only."""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

import source.cli.tasks as task_cli
from source.db.models import NewTask, TaskStatus
from source.media.write import write_video
from source.web.app import create_app
from source.web.auth import AuthConfigError, Tokens, check_bind


@pytest.fixture
def out(tmp_path):
    folder = tmp_path / "outputs"
    folder.mkdir()
    return folder


@pytest.fixture
def client(sqlite_store, out):
    with TestClient(create_app(sqlite_store, output_root=out)) as test_client:
        yield test_client


def test_submitted_task_answers_201_with_its_row_and_reads_back_by_id(client, sqlite_store):
    response = client.post("/api/tasks", json={"task_type": "ping", "params": {"message": "hi"}, "priority": 4})
    assert response.status_code == 201
    row = response.json()
    assert row["status"] == "Queued" and row["priority"] == 4 and row["params"] == {"message": "hi"}
    assert sqlite_store.get_task(row["id"]).task_type == "ping"
    assert client.get(f"/api/tasks/{row['id']}").json()["id"] == row["id"]
    assert client.get("/api/tasks/no-such-id").status_code == 404
    schema = client.get("/openapi.json").json()
    assert {"/api/tasks", "/api/tasks/{task_id}", "/api/tasks/{task_id}/events"} <= set(schema["paths"])


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"task_type": "make_coffee", "params": {}}, ["body", "task_type"], "unknown task type 'make_coffee'"),
    ({"task_type": "t2v", "params": {"prompt": ""}}, ["body", "params", "prompt"], "non-empty string"),
    ({"task_type": "t2v", "params": {"prompt": "a cat", "resolution": "big"}}, ["body", "params", "resolution"],
     "WIDTHxHEIGHT"),
    ({"task_type": "ping", "params": [1, 2]}, ["body", "params"], "dictionary"),
    ({"task_type": "ping", "dependant_on": "missing-row"}, ["body", "dependant_on"], "no task missing-row"),
    ({"task_type": "ping", "priority": 2**40}, ["body", "priority"], "less than or equal to 2147483647"),
])
def test_bad_submission_is_refused_422_naming_the_field_and_no_row_is_written(client, sqlite_store, body, field,
                                                                             words):
    response = client.post("/api/tasks", json=body)
    assert response.status_code == 422
    problem = response.json()["detail"][0]
    assert problem["loc"] == field and words in problem["msg"]
    assert sqlite_store.list_tasks() == []


def test_tasks_add_refuses_what_the_api_refuses_with_the_same_message(tmp_path, client):
    api = client.post("/api/tasks", json={"task_type": "t2v", "params": {"prompt": "x", "resolution": "big"}})
    cli = CliRunner().invoke(task_cli.cli, ["add", "--db-file", str(tmp_path / "cli.db"), "t2v",
                                            '{"prompt": "x", "resolution": "big"}'])
    assert cli.exit_code == 2
    assert api.json()["detail"][0]["msg"] in " ".join(cli.output.split())
    unknown = CliRunner().invoke(task_cli.cli, ["add", "--db-file", str(tmp_path / "cli.db"), "make_coffee"])
    assert unknown.exit_code == 2 and "unknown task type 'make_coffee'" in unknown.output


def test_list_filters_by_status_and_type_and_pages_newest_first(client, sqlite_store):
    ids = [sqlite_store.add_task(NewTask("ping", {"n": i})) for i in range(5)]
    sqlite_store.add_task(NewTask("extract_frame", {}))
    sqlite_store.cancel_task(ids[0])
    first = client.get("/api/tasks", params={"task_type": "ping", "limit": 2}).json()
    second = client.get("/api/tasks", params={"task_type": "ping", "limit": 2, "offset": 2}).json()
    last = client.get("/api/tasks", params={"task_type": "ping", "limit": 2, "offset": 4}).json()
    paged = [t["id"] for page in (first, second, last) for t in page["tasks"]]
    assert paged == [t.id for t in sqlite_store.list_tasks(task_type="ping")]
    assert sorted(paged) == sorted(ids)
    assert (first["next_offset"], second["next_offset"], last["next_offset"]) == (2, 4, None)
    cancelled = client.get("/api/tasks", params={"status": "Cancelled"}).json()["tasks"]
    assert [t["id"] for t in cancelled] == [ids[0]]
    assert client.get("/api/tasks", params={"status": "Done"}).status_code == 422


def test_cancel_and_retry_over_http_change_the_row_and_refuse_the_wrong_state(client, sqlite_store):
    task_id = sqlite_store.add_task(NewTask("ping", {}))
    assert client.post(f"/api/tasks/{task_id}/retry").status_code == 409
    assert client.post(f"/api/tasks/{task_id}/cancel").json()["status"] == "Cancelled"
    assert client.post(f"/api/tasks/{task_id}/cancel").status_code == 409
    assert client.post(f"/api/tasks/{task_id}/retry").json()["status"] == "Queued"
    assert sqlite_store.get_task(task_id).status is TaskStatus.QUEUED
    stats = client.get("/api/stats").json()
    assert stats["by_status"]["Queued"] == 1


def test_tokens_read_scope_reads_write_scope_writes_and_no_token_is_refused(sqlite_store, out):
    app = create_app(sqlite_store, output_root=out, tokens=Tokens.from_values(["reader-secret-1"],
                                                                              ["writer-secret-1"]))
    with TestClient(app) as client:
        reader = {"Authorization": "Bearer reader-secret-1"}
        writer = {"Authorization": "Bearer writer-secret-1"}
        assert client.get("/api/tasks").status_code == 401
        assert client.get("/api/tasks", headers={"Authorization": "Bearer guessed"}).status_code == 401
        assert client.get("/api/tasks", headers=reader).status_code == 200
        assert client.post("/api/tasks", json={"task_type": "ping"}, headers=reader).status_code == 403
        assert client.post("/api/tasks", json={"task_type": "ping"}, headers=writer).status_code == 201
        assert client.get("/", follow_redirects=False).headers["location"] == "/login"
        login = client.post("/login", data={"token": "reader-secret-1"}, follow_redirects=False)
        assert login.status_code == 303 and "httponly" in login.headers["set-cookie"].lower()
        page = client.get("/")  # the cookie now stands for the header
        assert page.status_code == 200 and 'data-can-write="false"' in page.text
        assert client.get("/api/tasks").status_code == 200


def test_no_tokens_is_allowed_only_on_loopback():
    check_bind("127.0.0.1", Tokens())
    check_bind("::1", Tokens())
    with pytest.raises(AuthConfigError, match="0.0.0.0"):
        check_bind("0.0.0.0", Tokens())
    check_bind("0.0.0.0", Tokens.from_values(["reader-secret-2"]))
    refused = CliRunner().invoke(task_cli.cli, ["serve", "--host", "0.0.0.0"])
    assert refused.exit_code == 2 and "--read-token" in refused.output
    short = CliRunner().invoke(task_cli.cli, ["serve", "--write-token", "abc123"])
    assert short.exit_code == 2 and "too easy to guess" in short.output


def test_outputs_are_served_from_the_output_root_only(client, sqlite_store, out, tmp_path):
    frames = np.linspace(0, 1, 5)[:, None, None, None] * np.ones((5, 32, 48, 3))
    video = write_video(frames, out / "clip.mp4", 16)
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    (out / "link.txt").symlink_to(outside)

    def finished(location: str) -> str:
        task_id = sqlite_store.add_task(NewTask("ping", {}))
        sqlite_store.claim_next_task("w", lease_seconds=60)
        sqlite_store.complete_task(task_id, "w", output_location=location, result=None)
        return task_id

    served = client.get(f"/api/tasks/{finished(str(video))}/output")
    assert served.status_code == 200 and served.content == video.read_bytes()
    assert served.headers["content-security-policy"] == "sandbox"
    for location in (str(outside), str(out / ".." / "secret.txt"), str(out / "link.txt"), "/etc/passwd"):
        assert client.get(f"/api/tasks/{finished(location)}/output").status_code == 404, location
    assert client.get("/api/files/clip.mp4").content == video.read_bytes()
    for path in ("..%2Fsecret.txt", "%2E%2E/secret.txt", "%2Fetc%2Fpasswd", "link.txt"):
        assert client.get(f"/api/files/{path}").status_code == 404, path

    remote = client.get(f"/api/tasks/{finished('https://cdn.example.com/o/clip.mp4')}/output",
                        follow_redirects=False)
    assert remote.status_code == 307 and remote.headers["location"] == "https://cdn.example.com/o/clip.mp4"


def test_thumbnail_is_the_first_frame_rendered_once_and_cached_under_the_output_root(client, sqlite_store, out):
    frames = np.zeros((5, 32, 48, 3))
    frames[0] = 1.0  # a white first frame, then black ones
    video = write_video(frames, out / "clip.mp4", 16)
    task_id = sqlite_store.add_task(NewTask("ping", {}))
    sqlite_store.claim_next_task("w", lease_seconds=60)
    sqlite_store.complete_task(task_id, "w", output_location=str(video), result=None)

    response = client.get(f"/api/tasks/{task_id}/thumbnail")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    cached = list((out / ".thumbnails").glob("*.jpg"))
    assert len(cached) == 1
    picture = np.asarray(Image.open(cached[0]))
    assert picture.shape == (32, 48, 3) and picture.mean() > 200
    stamp = cached[0].stat().st_mtime_ns
    os.utime(video, (1, 1))  # older than the thumbnail: not rendered again
    client.get(f"/api/tasks/{task_id}/thumbnail")
    assert cached[0].stat().st_mtime_ns == stamp


def test_a_task_reads_back_with_its_children_and_their_states(client, sqlite_store):
    parent = sqlite_store.add_task(NewTask("travel_orchestrator", {}))
    sqlite_store.claim_next_task("w", lease_seconds=60)
    first, second = sqlite_store.add_child_tasks(parent, [NewTask("travel_segment", {}, child_key="seg0"),
                                                          NewTask("travel_stitch", {}, child_key="stitch")])
    sqlite_store.cancel_task(second)
    row = client.get(f"/api/tasks/{parent}").json()
    assert [(c["id"], c["child_key"], c["status"]) for c in row["children"]] == [
        (first, "seg0", "Queued"), (second, "stitch", "Cancelled")]
