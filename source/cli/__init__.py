"""Command lines: the ``tasks`` admin/submit CLI and the store flags it shares with ``worker.py``."""
