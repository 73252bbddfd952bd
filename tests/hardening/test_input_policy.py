"""Input policy (issue #21, point 3): a row reads only files under the input roots and URLs on public
addresses, and its inputs are what they claim to be. The probe: ``extract_frame`` published a local
text file (and an internal page fetched over http://127.0.0.1) as a PNG and ended Complete."""

from __future__ import annotations

from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest

from source.db.models import NewTask, TaskStatus
from source.errors import InvalidParams
from source.media.write import write_video
from source.worker.loop import Worker
from source.worker.settings import WorkerSettings
from tests.hardening.boundary import snapshot, touched_outside
from tests.helpers import http_server, in_process_worker

SECRET = "AWS_SECRET_ACCESS_KEY=do-not-publish-me\n" * 40


@pytest.fixture
def layout(tmp_path):
    """An output root holding a secrets file and a real clip, and a folder outside every input root."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    clip = write_video(np.linspace(0, 1, 4)[:, None, None, None] * np.ones((4, 16, 16, 3)), out / "clip.mp4", 8)
    (out / "secrets.txt").write_text(SECRET)
    (out / "release.nfo").write_text(SECRET)
    outside_clip = write_video(np.ones((3, 16, 16, 3)) * 0.5, elsewhere / "outside.mp4", 8)
    (out / "link_out.mp4").symlink_to(outside_clip)
    return {"out": out, "elsewhere": elsewhere, "clip": clip, "outside_clip": outside_clip}


class InternalSite(BaseHTTPRequestHandler):
    """An internal host: a text page, a real clip and a redirect into itself."""

    clip: bytes = b""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/page.txt"):
            body = SECRET.encode()
        elif self.path.startswith("/clip.mp4"):
            body = self.clip
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def internal_site(layout):
    InternalSite.clip = layout["clip"].read_bytes()
    with http_server(InternalSite) as url:
        yield url


def run_rows(store, out: Path, rows: list[dict], **settings) -> list:
    ids = [store.add_task(NewTask("extract_frame", {"frame_index": 0, **params})) for params in rows]
    worker = Worker(store, WorkerSettings(worker_id="policy", main_output_dir=out, poll_interval=0.2, **settings),
                    exit_when_idle=True)
    assert worker.run() == 0
    return [store.get_task(task_id) for task_id in ids]


def test_hostile_inputs_fail_with_the_reason_and_a_good_row_behind_them_completes(sqlite_store, layout,
                                                                                   internal_site):
    out = layout["out"]
    port = internal_site.rsplit(":", 1)[1]
    hostile = [
        ({"input_video_path": str(out / "secrets.txt")}, "secrets.txt is not a readable video (container 'tty'"),
        ({"input_video_path": str(out / "release.nfo")}, "release.nfo is not a readable video"),
        ({"input_video_path": str(layout["outside_clip"])}, "is outside the allowed input folders"),
        ({"input_video_path": str(out / "link_out.mp4")}, "is outside the allowed input folders"),
        ({"input_video_path": f"{internal_site}/page.txt"}, "resolves to the non-public address 127.0.0.1"),
        ({"input_video_path": f"{internal_site}/clip.mp4"}, "resolves to the non-public address 127.0.0.1"),
        ({"input_video_path": f"http://localhost:{port}/clip.mp4"}, "host 'localhost' resolves to the non-public"),
        ({"input_video_path": f"http://[::ffff:127.0.0.1]:{port}/clip.mp4"}, "non-public address"),
        ({"input_video_path": "http://169.254.169.254/latest/meta-data/"}, "non-public address 169.254.169.254"),
    ]
    before = snapshot(out, layout["elsewhere"])
    rows = run_rows(sqlite_store, out, [params for params, _ in hostile] + [{"input_video_path": str(layout["clip"])}])
    for row, (params, message) in zip(rows, hostile, strict=False):
        assert row.status is TaskStatus.FAILED, (params, row.output_location)
        assert message in row.error_message, (params, row.error_message)
    good = rows[-1]
    assert good.status is TaskStatus.COMPLETE, good.error_message
    assert touched_outside(before, snapshot(out, layout["elsewhere"]), out / "_work", Path(good.output_location)) == []


def test_configured_roots_and_private_urls_are_allowed_only_when_asked(sqlite_store, layout, internal_site):
    rows = run_rows(sqlite_store, layout["out"], [{"input_video_path": str(layout["outside_clip"])},
                                                  {"input_video_path": f"{internal_site}/clip.mp4"},
                                                  {"input_video_path": f"{internal_site}/page.txt"}],
                    input_roots=(layout["elsewhere"],), allow_private_urls=True)
    assert [row.status for row in rows[:2]] == [TaskStatus.COMPLETE, TaskStatus.COMPLETE], rows[1].error_message
    # Allowed to fetch it, the text page is still not a video.
    assert rows[2].status is TaskStatus.FAILED and "page.txt is not a readable video" in rows[2].error_message


def pretend_public(roots: tuple[Path, ...], public_port: int):
    """A policy where 127.0.0.1:``public_port`` plays a public host; every other address keeps the real rule."""
    from source.task_files.policy import InputPolicy

    @dataclass(frozen=True)
    class PretendPublic(InputPolicy):
        public_port: int = 0

        def allows_address(self, address: str, port: int) -> bool:
            return port == self.public_port or super().allows_address(address, port)

    return PretendPublic(roots=roots, public_port=public_port)


class Redirector(BaseHTTPRequestHandler):
    target = ""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.mark.parametrize("internal", ["http://127.0.0.1:{port}/clip.mp4", "http://localhost:{port}/page.txt",
                                      "http://10.0.0.1/admin", "http://[::1]:{port}/clip.mp4"])
def test_a_redirect_from_a_public_host_to_an_internal_one_is_refused(tmp_path, internal_site, internal):
    from source.task_files.fetch import download
    from source.task_files.policy import TaskInputs

    internal_port = int(internal_site.rsplit(":", 1)[1])
    Redirector.target = internal.format(port=internal_port)
    with http_server(Redirector) as public:
        policy = pretend_public((tmp_path,), int(public.rsplit(":", 1)[1]))
        with pytest.raises(InvalidParams, match="non-public address"):
            download(f"{public}/video.mp4", "input_video_path", TaskInputs(tmp_path / "work", policy))
    assert not (tmp_path / "work").exists() or list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize(("params", "message"), [
    ({"model": "tiny_vace", "video_guide": "{out}/secrets.txt"}, "secrets.txt is neither an image nor a video"),
    ({"model": "tiny_vace", "video_guide": "{outside}"}, "is outside the allowed input folders"),
    ({"model": "tiny_vace", "video_guide": "{clip}", "image_refs": ["{out}/release.nfo"]},
     "params.image_refs: release.nfo is not a readable image"),
])
def test_generation_rows_check_their_file_inputs_before_any_model_loads(sqlite_store, layout, params, message):
    fill = {"out": layout["out"], "outside": layout["outside_clip"], "clip": layout["clip"]}
    params = {k: [v.format(**fill) for v in value] if isinstance(value, list) else value.format(**fill)
              for k, value in params.items() if k != "model"} | {"model": params["model"]}
    task_id = sqlite_store.add_task(NewTask("vace", {"prompt": "a test", **params}))
    in_process_worker(sqlite_store, WorkerSettings(worker_id="gen", main_output_dir=layout["out"]),
                      exit_when_idle=True).run()
    row = sqlite_store.get_task(task_id)
    assert row.status is TaskStatus.FAILED and message in row.error_message, row.error_message


def test_the_address_actually_connected_is_checked_too(tmp_path, internal_site):
    """A DNS answer can change between the policy's look-up and the connect (rebinding): the socket's peer
    address is checked again before any request byte is sent."""
    from source.task_files.fetch import download
    from source.task_files.policy import InputPolicy, TaskInputs

    @dataclass(frozen=True)
    class StaleLookup(InputPolicy):
        def check_url(self, url: str, name: str) -> None:  # the look-up said "public"
            pass

    with pytest.raises(InvalidParams, match="connected to the non-public address 127.0.0.1"):
        download(f"{internal_site}/clip.mp4", "video_guide", TaskInputs(tmp_path / "work", StaleLookup(roots=())))
    assert not (tmp_path / "work").exists() or list((tmp_path / "work").iterdir()) == []
