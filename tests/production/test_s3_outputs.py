"""Outputs in S3-compatible storage: a real worker process uploads to a real S3 HTTP server (moto's server
mode), the row's output_location is a URL that serves the file, and a failed upload never loses it."""

from __future__ import annotations

import io
import socket

import httpx
import pytest
from PIL import Image
from structlog.testing import capture_logs

from source.db import NewTask, TaskStatus
from source.errors import StorageUnavailable
from source.task_files.paths import task_output_name
from source.worker.s3_storage import MIB, S3Publisher, S3SettingsError, S3Target, parse_s3_target
from tests.helpers import run_worker


def _ping_row(sqlite_store, **row) -> str:
    return sqlite_store.add_task(NewTask("ping", {"message": "to the bucket"}, **row))


def test_a_worker_uploads_its_output_under_prefix_owner_task_and_the_row_holds_a_presigned_url(
        sqlite_store, tmp_path, s3_server):
    out = tmp_path / "out"
    task_id = _ping_row(sqlite_store, project_id="studio-7")
    done = run_worker(sqlite_store.path, out, "--once", "--storage", f"s3://{s3_server.bucket}/renders/",
                      env=s3_server.env)
    assert done.returncode == 0, done.stderr[-2000:]
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    key = f"renders/studio-7/{task_id}/{task_output_name(task_id, 'ping.json')}"
    assert row.output_location.startswith(f"{s3_server.endpoint_url}/{s3_server.bucket}/{key}?")
    assert "Signature=" in row.output_location and "Expires=" in row.output_location  # presigned, not public
    served = httpx.get(row.output_location)
    assert served.status_code == 200 and b"to the bucket" in served.content
    stored = s3_server.client().head_object(Bucket=s3_server.bucket, Key=key)
    assert stored["ContentType"] == "application/json"
    assert not (out / task_output_name(task_id, "ping.json")).exists()  # removed once uploaded, as today


def test_with_a_public_base_url_the_location_is_that_url_and_keep_local_keeps_the_file(
        sqlite_store, tmp_path, s3_server):
    out = tmp_path / "out"
    task_id = _ping_row(sqlite_store)
    public = f"{s3_server.endpoint_url}/{s3_server.bucket}"  # moto serves the bucket path-style, unsigned
    done = run_worker(sqlite_store.path, out, "--once", "--keep-local", "--storage", f"s3://{s3_server.bucket}",
                      env={**s3_server.env, "S3_PUBLIC_BASE_URL": public + "/"})
    assert done.returncode == 0, done.stderr[-2000:]
    row = sqlite_store.get_task(task_id)
    name = task_output_name(task_id, "ping.json")
    assert row.output_location == f"{public}/unassigned/{task_id}/{name}"
    assert (out / name).is_file()


def test_an_upload_the_server_refuses_fails_the_row_saying_where_the_file_is(sqlite_store, tmp_path, s3_server):
    out = tmp_path / "out"
    task_id = _ping_row(sqlite_store, max_attempts=1)
    done = run_worker(sqlite_store.path, out, "--once", "--storage", "s3://no-such-bucket-here/x",
                      env=s3_server.env)
    assert done.returncode == 0, done.stderr[-2000:]
    row = sqlite_store.get_task(task_id)
    local = (out / task_output_name(task_id, "ping.json")).resolve()
    assert row.status is TaskStatus.FAILED
    assert "S3 storage refused the output upload" in row.error_message and "NoSuchBucket" in row.error_message
    assert f"the generated file is kept at {local}" in row.error_message
    assert local.is_file()


def test_an_unreachable_endpoint_is_retried_then_the_task_retried_later_keeping_the_file(sqlite_store, tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    target = S3Target(bucket="outputs", endpoint_url=f"http://127.0.0.1:{port}", access_key_id="k",
                      secret_access_key="s")
    publisher = S3Publisher(target, attempts=3, backoff_seconds=0.01)
    task = sqlite_store.get_task(_ping_row(sqlite_store))
    output = tmp_path / "clip.mp4"
    output.write_bytes(b"video")
    with capture_logs() as logs, pytest.raises(StorageUnavailable, match="failed after 3 attempts"):
        publisher.publish(task, output)
    assert [e["attempt"] for e in logs if e["event"] == "output_upload_failed"] == [1, 2]
    assert output.is_file()


def test_a_large_output_goes_up_in_parts(sqlite_store, tmp_path, s3_server):
    env = {**s3_server.env, "S3_MULTIPART_THRESHOLD_MB": "5", "S3_MULTIPART_CHUNK_MB": "5"}
    publisher = S3Publisher(parse_s3_target(f"s3://{s3_server.bucket}/big", env), keep_local=True)
    task = sqlite_store.get_task(_ping_row(sqlite_store, project_id="p"))
    output = tmp_path / "long.mp4"
    payload = bytes(range(256)) * (11 * MIB // 256)
    output.write_bytes(payload)
    publisher.publish(task, output)
    key = f"big/p/{task.id}/long.mp4"
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload's ETag counts its parts
    body = s3_server.client().get_object(Bucket=s3_server.bucket, Key=key)["Body"].read()
    assert body == payload and head["ContentType"] == "video/mp4"


@pytest.mark.parametrize(("storage", "env", "names"), [
    ("s3:/nobucket", {}, "--storage"),
    ("gs://bucket", {}, "--storage"),
    ("s3://b", {"S3_PRESIGN_EXPIRES_SECONDS": "999999999"}, "S3_PRESIGN_EXPIRES_SECONDS"),
    ("s3://b", {"S3_MULTIPART_CHUNK_MB": "1"}, "S3_MULTIPART_CHUNK_MB"),
    ("s3://b", {"S3_PUBLIC_BASE_URL": "cdn.example.com"}, "S3_PUBLIC_BASE_URL"),
])
def test_unusable_s3_settings_are_refused_naming_the_setting(storage, env, names):
    with pytest.raises(S3SettingsError, match=names):
        parse_s3_target(storage, env)


def test_a_worker_with_unusable_s3_settings_does_not_start(sqlite_store, tmp_path):
    done = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--storage", "bucket-without-scheme")
    assert done.returncode == 2 and "--storage" in done.stderr


def test_the_secret_key_never_reaches_a_log_line(tmp_path):
    target = parse_s3_target("s3://b", {"S3_SECRET_ACCESS_KEY": "very-secret-key-123"})
    assert "very-secret-key-123" not in repr(target)
    from source.logging_utils import redact

    assert "very-secret-key-123" not in redact("boto said very-secret-key-123")



@pytest.mark.slow
def test_a_generated_video_and_its_thumbnail_go_to_the_bucket_with_urls_that_serve_them(
        sqlite_store, tmp_path, s3_server):
    params = {"model": "tiny_t2v", "prompt": "a red cat", "resolution": "32x32", "video_length": 5,
              "num_inference_steps": 2, "seed": 1}
    task_id = sqlite_store.add_task(NewTask("t2v", params, project_id="p"))
    done = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--storage", f"s3://{s3_server.bucket}",
                      env=s3_server.env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.COMPLETE, row.error_message
    video, thumbnail = httpx.get(row.output_location), httpx.get(row.result["thumbnail"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4" and video.content[4:8] == b"ftyp"
    # the thumbnail's presigned query survives the result's redaction of URL credentials
    assert thumbnail.status_code == 200
    assert Image.open(io.BytesIO(thumbnail.content)).size == (32, 32)
    keys = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_server.bucket)["Contents"]}
    assert len(keys) == 2 and all(k.startswith(f"p/{task_id}/") for k in keys)
