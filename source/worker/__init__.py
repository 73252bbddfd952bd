"""The worker process around the loop: claim → route → run → report, heartbeat, publishing, metrics, settings."""
