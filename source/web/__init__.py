"""The web status page and HTTP API over the task store (``tasks serve``)."""
