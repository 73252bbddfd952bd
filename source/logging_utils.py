"""structlog set-up: JSON lines for machines, a readable console for people, secrets never printed."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

import structlog

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
REDACTED = "[REDACTED]"


def register_secret(value: str | None) -> None:
    """Every later log line has this value replaced, wherever it appears."""
    if value and len(value) >= 6:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    return value


def redact_secrets(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    if not _secrets:
        return event_dict
    return {key: _redact_value(value) for key, value in event_dict.items()}


def configure_logging(log_format: str = "auto", *, debug: bool = False, save_path: str | None = None) -> None:
    """``log_format``: ``json``, ``console``, or ``auto`` (console on a terminal, JSON otherwise)."""
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )

    def formatter(json_lines: bool) -> structlog.stdlib.ProcessorFormatter:
        renderer = (
            structlog.processors.JSONRenderer()
            if json_lines
            else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        )
        tail = [structlog.processors.format_exc_info] if json_lines else []
        return structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact_secrets,
                *tail,
                renderer,
            ],
        )

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter(use_json))
    root.addHandler(console)
    if save_path:
        Path(save_path).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(save_path, encoding="utf-8")
        file_handler.setFormatter(formatter(True))
        root.addHandler(file_handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # Libraries that chatter at INFO (HTTP clients, hub) stay quiet unless --debug.
    for noisy in ("httpx", "httpcore", "urllib3", "huggingface_hub", "filelock", "hpack"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
