"""One place that builds the supabase-py client (API-mode store and Storage uploads each get their own)."""

from __future__ import annotations

import httpx
from supabase import Client, ClientOptions, create_client

RPC_TIMEOUT_SECONDS = 30.0
STORAGE_TIMEOUT_SECONDS = 300.0


def make_client(url: str, key: str, *, timeout_seconds: float = RPC_TIMEOUT_SECONDS) -> Client:
    """A client authenticated with the service-role key (or an access token): no session, no refresh.
    supabase-py shares one httpx client between PostgREST and Storage, so the timeout is per client:
    short for RPC (a hung call must not stall heartbeats), long for uploads."""
    options = ClientOptions(
        httpx_client=httpx.Client(timeout=httpx.Timeout(timeout_seconds, connect=10.0)),
        auto_refresh_token=False,
        persist_session=False,
    )
    return create_client(url, key, options=options)
