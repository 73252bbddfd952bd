"""Structured logs: secrets registered from flags/env never reach any log output."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO_ROOT

SECRET = "sb-secret-service-role-key-0123456789"


def test_registered_secrets_are_redacted_from_every_log_line(tmp_path):
    script = f"""
import logging, structlog
from source.logging_utils import configure_logging, register_secret
configure_logging("json", debug=True, save_path={str(tmp_path / 'saved.log')!r})
register_secret({SECRET!r})
structlog.get_logger("t").info("connecting", url="postgres://u:{SECRET}@h/db", nested={{"k": ["{SECRET}"]}})
logging.getLogger("thirdparty").warning("token=%s", {SECRET!r})
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    saved = (tmp_path / "saved.log").read_text()
    for output in (result.stderr, saved):
        assert SECRET not in output
        assert output.count("[REDACTED]") == 3


def test_worker_never_logs_the_supabase_key_given_by_env(tmp_path):
    env = {**os.environ, "SUPABASE_SERVICE_ROLE_KEY": SECRET, "SUPABASE_URL": "http://127.0.0.1:9"}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "worker.py"), "--db-type", "supabase", "--debug", "--log-format", "json",
         "--once", "--poll-interval", "0.1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env,
    )
    assert SECRET not in result.stdout + result.stderr
