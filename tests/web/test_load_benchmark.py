"""benchmarks/web_api_load.py at a smoke size, so it keeps working: every SSE client gets every row."""

from __future__ import annotations

import re

from click.testing import CliRunner

from benchmarks import web_api_load


def test_load_benchmark_runs_and_every_sse_client_receives_every_row():
    result = CliRunner().invoke(web_api_load.main, ["--requests", "20", "--clients", "2", "--sse-clients", "10",
                                                    "--seconds", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "HTTP POST /api/tasks (2 clients)" in result.output and "tasks add" in result.output
    delivered = re.findall(r"SSE\s+(\d+) clients:.*delivered (\d+)/(\d+)", result.output)
    assert [(clients, got == want) for clients, got, want in delivered] == [("1", True), ("10", True)]
