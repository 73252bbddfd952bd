"""benchmarks/fleet_simulation.py at a tiny fleet, so the harness keeps working between real runs."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from benchmarks.fleet_simulation import main

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_fleet_simulation_prints_the_three_designs_and_the_targets_at_a_tiny_size(postgres_url):
    # on the test server (a fleet of 3 fits its connections): a throwaway cluster is what real runs start
    result = CliRunner().invoke(main, ["--sizes", "3", "--processes", "1", "--idle-seconds", "1",
                                       "--steady-seconds", "2", "--mean-task-seconds", "0.3",
                                       "--admin-url", postgres_url],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output[-3000:]
    assert "== N = 3 workers ==" in result.output
    header = next(line for line in result.output.splitlines() if "all/doorbell" in line)
    assert header.split() == ["all", "listen", "doorbell", "all/doorbell", "listen/doorbell"]
    assert "Postgres CPU (cores), steady load" in result.output
    assert "claim calls per row, burst of N rows" in result.output
    assert "claims per row <= 3: met" in result.output
    assert "connections per worker <= 2: met" in result.output
