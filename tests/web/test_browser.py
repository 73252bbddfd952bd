"""The status page in a real browser (Debian's headless Chromium driven by Playwright) while a real worker
process runs tiny tasks: a task submitted over HTTP appears, its progress moves, its output's first-frame
thumbnail shows and its video plays, a cancel clicked on the page stops a running generation, and the page
fits a phone's width.

Screenshots of the page are kept in ``$TEST_ARTIFACTS_DIR`` (default ``test-artifacts/``);
``UPDATE_DOCS_SCREENSHOT=1`` also writes the README's ``docs/status-page.png``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from source.db.models import TaskStatus
from source.db.sqlite import SqliteTaskStore
from tests.helpers import REPO_ROOT, start_worker, wait_for
from tests.web.live import serve_process

pytestmark = pytest.mark.slow

# CHROMIUM_PATH names another Chromium build (another distribution, a local one).
CANDIDATES = (os.environ["CHROMIUM_PATH"],) if os.environ.get("CHROMIUM_PATH") else (
    "/usr/bin/chromium", "chromium", "chromium-browser")
CHROMIUM = next((found for name in CANDIDATES if (found := shutil.which(name))), None)
SHORT = {"prompt": "a red ball bounces", "model": "tiny_t2v", "seed": 7, "steps": 3}
# ~50 tiny steps a second on CPU: over a minute of work (inside the tiny model's per-task work budget), so
# only a cancel ends it within the test.
LONG = {"prompt": "a very long dance", "model": "tiny_t2v", "seed": 8, "steps": 3500}


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip(f"no Chromium on this machine (looked for {', '.join(CANDIDATES)}; scripts/test.sh installs "
                    "Debian's chromium with apt-get where it can)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def _artifacts() -> Path:
    folder = Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO_ROOT / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _keep_screenshot(page, name: str, *, for_docs: bool = False) -> None:
    page.mouse.move(0, 0)
    page.screenshot(path=str(_artifacts() / name))
    if for_docs and os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        page.screenshot(path=str(REPO_ROOT / "docs" / name), clip={"x": 0, "y": 0, "width": 1000, "height": 640})


def test_status_page_follows_a_real_worker_shows_thumbnails_and_cancels_from_the_page(browser, tmp_path):
    db, out = tmp_path / "tasks.db", tmp_path / "outputs"
    store = SqliteTaskStore(db)
    store.migrate()
    worker = start_worker(db, out, "--worker", "browser-w", log_path=tmp_path / "worker.log")
    try:
        with serve_process(db, out, log_path=tmp_path / "serve.log") as url, httpx.Client(base_url=url) as api:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            try:
                _follow_tasks_on_the_page(page, url, api, store)
            except BaseException:
                page.screenshot(path=str(_artifacts() / "status-page-failure.png"))
                for log in ("worker.log", "serve.log"):
                    shutil.copy(tmp_path / log, _artifacts() / f"browser-test-{log}")
                raise
            finally:
                page.close()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        store.close()


def _follow_tasks_on_the_page(page, url: str, api: httpx.Client, store: SqliteTaskStore) -> None:
    page.goto(url)
    page.locator("#live.on").wait_for(timeout=15_000)

    short = api.post("/api/tasks", json={"task_type": "t2v", "params": SHORT, "priority": 1}).json()["id"]
    long = api.post("/api/tasks", json={"task_type": "t2v", "params": LONG}).json()["id"]
    short_row, long_row = (page.locator(f'#tasks tr[data-task-id="{i}"]') for i in (short, long))
    short_row.wait_for(timeout=10_000)  # appears without a reload: the SSE stream brought it

    page.locator(f'#tasks tr[data-task-id="{short}"][data-status="Complete"]').wait_for(timeout=90_000)
    thumb = page.locator(f'#gallery figure[data-task-id="{short}"] img.thumb')
    thumb.wait_for(timeout=10_000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle(),
                           timeout=10_000)
    page.locator(f'#gallery figure[data-task-id="{short}"] .player').hover()  # a video plays on hover
    page.wait_for_function(
        f"""() => {{ const v = document.querySelector('#gallery figure[data-task-id="{short}"] video');
                  return v && v.readyState >= 2 && v.videoWidth > 0; }}""", timeout=10_000)

    # The table is re-rendered on every change: read the bar by selector each time, not by handle.
    progress = (f"() => Number(document.querySelector('#tasks tr[data-task-id=\"{long}\"] .progress')"
                "?.dataset.progress || 0)")
    page.wait_for_function(f"({progress})() > 0", timeout=60_000)
    first = page.evaluate(progress)
    page.wait_for_function(f"({progress})() > {first}", timeout=30_000)

    _keep_screenshot(page, "status-page.png", for_docs=True)  # a generation running, an output shown
    long_row.locator("button.cancel").click()
    page.locator(f'#tasks tr[data-task-id="{long}"][data-status="Cancelled"]').wait_for(timeout=10_000)
    cancelled = store.get_task(long)
    assert cancelled.status is TaskStatus.CANCELLED and cancelled.output_location is None
    # The worker is free again only if the generation really stopped (it had minutes of steps left).
    ping = api.post("/api/tasks", json={"task_type": "ping", "params": {}}).json()["id"]
    wait_for(lambda: store.get_task(ping).status is TaskStatus.COMPLETE, timeout=30)
    page.locator(f'#tasks tr[data-task-id="{ping}"][data-status="Complete"]').wait_for(timeout=10_000)
    _keep_screenshot(page, "status-page-after-cancel.png")

    page.goto(f"{url}/tasks/{short}")
    page.locator("#task-body video.output").wait_for(timeout=10_000)
    assert "a red ball bounces" in page.locator("#task-body pre.json").first.inner_text()
    assert page.evaluate("[...document.querySelector('#task-body').childNodes].every(n => n.nodeType === 1)"), \
        "only blocks in the task page (no stray text such as 'null')"

    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the screen
    page.goto(url)
    page.locator(f'#tasks tr[data-task-id="{long}"]').wait_for(timeout=10_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
