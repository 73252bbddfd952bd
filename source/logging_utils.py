"""structlog set-up: JSON lines for machines, a readable console for people, secrets never printed."""

from __future__ import annotations

import logging
import re
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


# scheme://[userinfo@]host-and-path[?query][#fragment]; userinfo and query are where URLs carry credentials.
_URL = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s@?#]*@)?(?P<rest>[^\s?#'\"<>]*)"
                  r"(?P<query>\?[^\s#'\"<>]*)?(?P<fragment>#[^\s'\"<>]*)?")


def _redact_url_match(match: re.Match[str]) -> str:
    userinfo = f"{REDACTED}@" if match["userinfo"] else ""
    query = f"?{REDACTED}" if match["query"] and match["query"] != "?" else (match["query"] or "")
    fragment = f"#{REDACTED}" if match["fragment"] and match["fragment"] != "#" else (match["fragment"] or "")
    return f"{match['head']}{userinfo}{match['rest']}{query}{fragment}"


def redact_url(text: str) -> str:
    """``text`` with the userinfo, query string and fragment of every URL in it replaced."""
    return _URL.sub(_redact_url_match, text) if "://" in text else text


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return redact_url(text)


def redact_value(value: Any) -> Any:
    """``value`` with every registered secret and URL credential replaced in its strings, however deeply
    nested."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


def redact_secrets(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {key: redact_value(value) for key, value in event_dict.items()}


def _redacting(renderer: Any) -> Any:
    """The rendered line scrubbed once more: exception tracebacks are formatted after the event dict
    was redacted, and may quote a secret (a connection URL in an error message)."""

    def render(logger: Any, method: str, event_dict: dict[str, Any]) -> Any:
        rendered = renderer(logger, method, event_dict)
        return redact(rendered) if isinstance(rendered, str) else rendered

    return render


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
                _redacting(renderer),
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
