"""Which store failures are an outage (the database away, restarting, locked, a pooler or API in between
failing): worth another try after a backoff. Everything else is an answer that another try would repeat
(refused credentials, a missing function, bad SQL) and goes up at once."""

from __future__ import annotations

import sqlite3

import httpx
import psycopg
from postgrest.exceptions import APIError
from psycopg_pool import PoolTimeout

from source.db.config import NoTasksTable, SchemaOutdated, StoreUnavailable

# Connection lost or refused, server shutting down or starting, too many connections, a deadlock or a
# serialization failure (all OperationalError), or no pooled connection in time.
POSTGRES_OUTAGE = (psycopg.OperationalError, PoolTimeout)

# PostgREST codes for "the database is not reachable right now", and Postgres connection-loss states.
API_TRANSIENT_CODES = frozenset({"PGRST000", "PGRST001", "PGRST002", "PGRST003",
                                 "57P01", "57P03", "08000", "08003", "08006"})
# SQLite: another process holds the lock past the busy timeout, or the file cannot be read or written now.
SQLITE_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_FULL",
                    "SQLITE_PROTOCOL")


# What the server answers a connection it will never accept (libpq gives no SQLSTATE for these).
CONNECT_REFUSALS = ("does not exist", "password authentication failed", "no pg_hba.conf entry",
                    "permission denied for database")


def is_refused(exc: BaseException) -> bool:
    """Class 28 (invalid authorization: a bad password, an unknown role or access token) and 3D (no such
    database) are answers, not an outage; so is a connection the server refused for those reasons."""
    if not isinstance(exc, psycopg.Error):
        return False
    if exc.sqlstate:
        return exc.sqlstate[:2] in ("28", "3D")
    return any(refusal in str(exc) for refusal in CONNECT_REFUSALS)


def is_postgres_outage(exc: BaseException) -> bool:
    return isinstance(exc, POSTGRES_OUTAGE) and not is_refused(exc)


def is_api_outage(exc: BaseException) -> bool:
    """The Supabase API: the network, or PostgREST saying the database is away."""
    return isinstance(exc, httpx.TransportError) or (isinstance(exc, APIError) and exc.code in API_TRANSIENT_CODES)


def is_sqlite_outage(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    name = getattr(exc, "sqlite_errorname", "") or ""
    # Before Python 3.11 (no error name): the lock is the outage that matters, told by its message.
    return name.startswith(SQLITE_TRANSIENT) if name else "locked" in str(exc) or "busy" in str(exc)


def is_store_outage(exc: BaseException) -> bool:
    """Any backend's outage. StoreUnavailable is what a store raises once its own retries are used; a schema
    that is behind or missing is not one."""
    unavailable = isinstance(exc, StoreUnavailable) and not isinstance(exc, (SchemaOutdated, NoTasksTable))
    return (unavailable or is_postgres_outage(exc) or is_api_outage(exc)
            or is_sqlite_outage(exc))
