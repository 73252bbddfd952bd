"""Secrets (service key, database password) never reach logs, --debug output, tracebacks, or what the
worker stores in a row (error_message, result). Checked by scanning everything for canary values."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from source.db.models import NewTask
from tests.helpers import REPO_ROOT, run_worker

SERVICE_KEY = "sb-canary-service-role-key-7f3a9c"
DB_PASSWORD = "pg-canary-password-51d2"
SECRETS = (SERVICE_KEY, DB_PASSWORD)


def test_secrets_stay_out_of_debug_logs_saved_logs_and_stored_rows(sqlite_store, tmp_path):
    # Set in the environment as on a production box, unused (the store is SQLite) but still secrets.
    env = {"SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY, "SUPABASE_DB_URL": f"postgresql://worker:{DB_PASSWORD}@127.0.0.1:9/t",
           "HF_HUB_OFFLINE": "1"}
    ids = {
        # an input URL carrying the key: the download error quotes the URL
        "url": sqlite_store.add_task(NewTask("extract_frame", {
            "input_video_path": f"http://127.0.0.1:9/clip.mp4?apikey={SERVICE_KEY}", "frame_index": 0})),
        # a handler echoing its input into result
        "echo": sqlite_store.add_task(NewTask("ping", {"message": f"password={DB_PASSWORD}"})),
        # --debug logs every resolved generation parameter, the prompt included
        "debug": sqlite_store.add_task(NewTask("t2v", {"prompt": f"a cat {SERVICE_KEY}", "model": "tiny_t2v"})),
    }
    saved = tmp_path / "saved.log"
    result = run_worker(sqlite_store.path, tmp_path / "out", "--db-type", "sqlite", "--once", "--debug", "--allow-private-urls",
                        "--save-logging", str(saved), timeout=180, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    outputs = {"stdout+stderr": result.stdout + result.stderr, "saved log": saved.read_text()}
    rows = {name: sqlite_store.get_task(task_id) for name, task_id in ids.items()}
    for name, row in rows.items():
        outputs[f"row {name}"] = f"{row.error_message} {row.result_json} {row.output_location}"
    for where, text in outputs.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} leaked into {where}"
    # the scrubbing really happened where the secret would otherwise have been (the canaries were live)
    assert "[REDACTED]" in rows["url"].error_message
    assert rows["echo"].result["message"] == "password=[REDACTED]"
    assert "parameters_resolved" in outputs["stdout+stderr"] and "a cat [REDACTED]" in outputs["stdout+stderr"]


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_tracebacks_in_logs_are_scrubbed_too(tmp_path, log_format):
    script = f"""
import structlog
from source.logging_utils import configure_logging, register_secret
configure_logging({log_format!r}, debug=True, save_path={str(tmp_path / 'saved.log')!r})
register_secret({SERVICE_KEY!r})
try:
    raise ConnectionError("could not connect to https://db.example?key={SERVICE_KEY}")
except ConnectionError as exc:
    structlog.get_logger("t").error("handler_crashed", exc_info=exc)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60, env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode == 0, result.stderr
    for text in (result.stderr, (tmp_path / "saved.log").read_text()):
        assert "ConnectionError" in text and "Traceback" in text
        assert SERVICE_KEY not in text
        assert "[REDACTED]" in text
