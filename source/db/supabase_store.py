"""Task store through the Supabase API (supabase-py ``rpc`` → PostgREST) on the same SQL functions as the
direct Postgres store. PostgREST has no LISTEN: an idle worker polls its own wake marker (wake-one), or the
table's change marker (wake-all), with a short backoff."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from postgrest.exceptions import APIError
from supabase import Client

from source.db.config import MIGRATE_COMMAND, SchemaOutdated, StoreUnavailable
from source.db.rpc_store import WAKE_MODES, IdleState, Row, RpcTaskStore, expected_schema_version
from source.db.supabase_client import make_client
from source.db.transient import is_api_outage
from source.retry import Backoff, RetryPolicy, retry_call

log = structlog.get_logger(__name__)

# ... and 28000: the personal access token is unknown or revoked (user_* functions, migration 007)
REJECTED_KEY_CODES = {"PGRST301", "PGRST302", "PGRST303", "42501", "28000"}
POLL_MIN_SECONDS = 0.2
POLL_MAX_SECONDS = 2.0
# A call while the API or its database is away: 0.1 s, 0.2 s, ... up to 5 s between tries.
API_BACKOFF = Backoff(first=0.1, cap=5.0)
STARTUP_RETRY_SECONDS = 10.0


@dataclass
class _PollState:
    marker: str | None = None
    interval: float = POLL_MIN_SECONDS
    next_poll: float = 0.0


class SupabaseTaskStore(RpcTaskStore):
    _key_setting = "SUPABASE_SERVICE_ROLE_KEY (alias SUPABASE_SERVICE_KEY) / --supabase-access-token"

    def __init__(self, url: str, key: str, *, retry_seconds: float = 120.0, client: Client | None = None,
                 access_token: str | None = None, wake: str = "one") -> None:
        """``wake``: "one" (an idle worker registers and polls its own wake marker until the dispatcher picks
        it, migration 011) or "all" (it polls the table's change marker and looks at the table on a change)."""
        if wake not in WAKE_MODES:
            raise ValueError(f"wake must be one of {', '.join(WAKE_MODES)}, not {wake!r}")
        self.url = url
        self.wake = wake
        self._idle = IdleState()
        self.access_token = access_token
        self.retry_seconds = retry_seconds
        self.client = client or make_client(url, key)
        self._postgrest = self.client.postgrest  # built once here, not lazily from several threads
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"SupabaseTaskStore(url={self.url!r})"

    # -- calling the SQL functions -------------------------------------------------------------------
    def _rows(self, function: str, **params: Any) -> list[Row]:
        data = self._call(*self._route(function, params), self.retry_seconds)
        return [_normalize(row) for row in data or []]

    def _value(self, function: str, **params: Any) -> Any:
        return self._call(*self._route(function, params), self.retry_seconds)

    def _call(self, function: str, params: dict[str, Any], retry_seconds: float) -> Any:
        def request() -> Any:
            return self._postgrest.rpc(function, params).execute().data

        policy = RetryPolicy(API_BACKOFF, deadline_seconds=retry_seconds, retryable=is_api_outage)
        try:
            return retry_call(request, policy, event="supabase_unavailable", log=log, function=function)
        except (httpx.TransportError, APIError) as exc:
            if not is_api_outage(exc):
                raise
            raise StoreUnavailable(f"Supabase API at {self.url} unreachable: calling {function} failed: "
                                   f"{_describe(exc)}") from exc

    # -- schema --------------------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        raise StoreUnavailable("the Supabase API cannot change the schema; migrate over a direct Postgres URL: "
                               f"{MIGRATE_COMMAND}")

    def check_schema(self) -> None:
        """The migrations must have been applied (``--migrate-only`` over a direct URL, or ``supabase db
        push``); say so clearly when they were not."""
        expected = expected_schema_version()
        try:
            version = self._call(*self._route("tasks_schema_version", {}), STARTUP_RETRY_SECONDS)
        except APIError as exc:
            if exc.code in REJECTED_KEY_CODES:
                setting = ("--supabase-access-token (a token from user_api_tokens) and --supabase-anon-key"
                           if self.access_token else self._key_setting)
                raise StoreUnavailable(f"the Supabase API at {self.url} rejected the key ({_describe(exc)}); "
                                       f"check {setting}") from exc
            raise SchemaOutdated(self.url, 0, expected,
                                 reason=f"the task functions are missing ({_describe(exc)})") from exc
        if int(version) < expected:
            raise SchemaOutdated(self.url, int(version), expected)

    # -- wake-up -------------------------------------------------------------------------------------
    def wait_for_change(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Poll ``tasks_change_marker`` (one index probe), fast after a change, backing off to 2 s while
        nothing happens. Each thread keeps its own last-seen marker."""
        state: _PollState | None = getattr(self._local, "poll", None)
        if state is None:
            state = self._local.poll = _PollState()
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if now >= state.next_poll:
                try:
                    marker = str(self._call(*self._route("tasks_change_marker", {}), 0))
                except (StoreUnavailable, APIError) as exc:
                    log.warning("change_poll_failed", error=str(exc))
                    marker = None
                changed = marker is None or (state.marker is not None and marker != state.marker)
                state.marker = marker if marker is not None else state.marker
                state.interval = POLL_MIN_SECONDS if changed else min(state.interval * 1.5, POLL_MAX_SECONDS)
                state.next_poll = now + state.interval
                if changed:
                    return True
            pause = min(state.next_poll, deadline) - now
            if now >= deadline:
                return False
            if stop is not None:
                if stop.wait(pause):
                    return False
            else:
                time.sleep(pause)

    def close(self) -> None:
        self._postgrest.session.close()


def _describe(exc: Exception) -> str:
    if isinstance(exc, APIError):
        return f"{exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _normalize(row: Any) -> Any:
    """PostgREST renders timestamptz as ``...+00:00``; the other stores give ``...Z``."""
    if not isinstance(row, dict):
        return row
    return {key: value[:-6] + "Z" if isinstance(value, str) and value.endswith("+00:00") and "T" in value[:11]
            else value for key, value in row.items()}
