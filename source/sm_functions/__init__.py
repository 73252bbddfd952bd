"""Orchestrated workflows: an orchestrator row creates child rows chained by ``dependant_on``; the last
child completes the orchestrator. No handler waits for another row."""
