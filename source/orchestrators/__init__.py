"""Orchestrated workflows: an orchestrator row creates child rows chained by ``dependant_on``; the last
child completes the parent."""
