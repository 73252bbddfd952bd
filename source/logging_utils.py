"""structlog set-up: JSON lines for machines, a readable console for people, secrets never printed."""

from __future__ import annotations

import io
import logging
import logging.handlers
import re
import sys
import threading
import time
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


# Libraries that install their own stderr handler (and stop propagation) on first use; routed to ours instead.
_SELF_HANDLED_LIBRARIES = ("transformers", "diffusers")
_routed: set[str] = set()


def route_library_logging() -> None:
    """Send the records of transformers/diffusers (those already imported) through the root handlers, i.e.
    structlog with the task context, instead of their own plain-text stderr handler. Cheap: call it often."""
    for name in _SELF_HANDLED_LIBRARIES:
        if name in _routed:
            continue
        module = sys.modules.get(f"{name}.utils.logging")
        if module is None:
            continue
        module.disable_default_handler()
        module.enable_propagation()
        _routed.add(name)


# tqdm's line: "<desc>: 40%|████  | 2/5 [00:01<00:02, 1.2it/s]" (the bar and the bracket are optional).
_TQDM = re.compile(r"^(?:(?P<desc>.*?): *)?(?P<percent>\d{1,3})%\|[^|]*\| *(?P<n>[\d.]+[kMGTP]?)/(?P<total>[\d.]+[kMGTP]?)")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PROGRESS_EVENT_INTERVAL = 5.0


class StrayOutputToLog(io.TextIOBase):
    """Stands in for ``sys.stdout``/``sys.stderr`` in JSON mode: whatever a library prints becomes a log
    event (with the task context), and tqdm bars become ``progress`` events, at most one per bar every
    ``interval`` seconds plus the first and the last. Writes made while logging itself (a handler's own
    error) go to the real stream, so nothing can loop."""

    def __init__(self, name: str, real: Any, *, interval: float = PROGRESS_EVENT_INTERVAL) -> None:
        self.name = name
        self.real = real
        self.interval = interval
        self._pending = ""
        self._last_progress: dict[str, tuple[float, int, bool]] = {}
        self._lock = threading.RLock()
        self._local = threading.local()
        self._log = structlog.get_logger("stray_output")

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.real.fileno()

    def write(self, text: str) -> int:
        if getattr(self._local, "busy", False):
            return self.real.write(text)
        self._local.busy = True
        try:
            route_library_logging()
            with self._lock:
                self._pending += text
                *segments, self._pending = re.split(r"[\r\n]", self._pending)
            for segment in segments:
                self._emit(_ANSI.sub("", segment).strip())
        finally:
            self._local.busy = False
        return len(text)

    def flush(self) -> None:
        self.real.flush()

    def _emit(self, segment: str) -> None:
        if not segment:
            return
        bar = _TQDM.match(segment)
        if bar is None:
            log = self._log.warning if self.name == "stderr" else self._log.info
            log("stray_output", stream=self.name, text=segment)
            return
        desc, percent = (bar["desc"] or "progress").strip(), int(bar["percent"])
        now = time.monotonic()
        with self._lock:
            last = self._last_progress.get(desc)
            # The first line of a bar (or of the next bar with the same label), its end once (tqdm redraws
            # the final state on close), and in between one line per interval.
            finished = bar["n"] == bar["total"]  # not percent: 199/200 already prints as 100 %
            due = (last is None or percent < last[1] or (finished and not last[2])
                   or (percent != last[1] and now - last[0] >= self.interval))
            if due:
                self._last_progress[desc] = (now, percent, finished)
        if due:
            self._log.info("progress", bar=desc, percent=percent, done=bar["n"], total=bar["total"])


def capture_stray_output() -> None:
    """Off a terminal, make every line on stdout/stderr a JSON object: prints and tqdm bars become log
    events, Python warnings go through logging. Call after ``configure_logging`` (its handler keeps the
    real stderr)."""
    logging.captureWarnings(True)
    route_library_logging()
    if not isinstance(sys.stdout, StrayOutputToLog):
        sys.stdout = StrayOutputToLog("stdout", sys.stdout)
    if not isinstance(sys.stderr, StrayOutputToLog):
        sys.stderr = StrayOutputToLog("stderr", sys.stderr)


def json_lines_wanted(log_format: str) -> bool:
    return log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())


def configure_logging(log_format: str = "auto", *, debug: bool = False, save_path: str | None = None,
                      save_max_bytes: int = 0, save_backups: int = 5) -> None:
    """``log_format``: ``json``, ``console``, or ``auto`` (console on a terminal, JSON otherwise).
    ``save_max_bytes`` > 0: the saved log rotates at that size, keeping ``save_backups`` old files."""
    use_json = json_lines_wanted(log_format)
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
    # The real stream even when sys.stderr is a StrayOutputToLog (configure_logging called again).
    console = logging.StreamHandler(getattr(sys.stderr, "real", sys.stderr))
    console.setFormatter(formatter(use_json))
    root.addHandler(console)
    if save_path:
        Path(save_path).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(save_path, maxBytes=save_max_bytes,
                                                            backupCount=save_backups, encoding="utf-8")
        file_handler.setFormatter(formatter(True))
        root.addHandler(file_handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # Libraries that chatter at INFO (HTTP clients, hub) stay quiet unless --debug.
    for noisy in ("httpx", "httpcore", "urllib3", "huggingface_hub", "filelock", "hpack", "psycopg"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
