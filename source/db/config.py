"""Where the task store lives, as the CLI flags and environment describe it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class DbType(str, Enum):
    SQLITE = "sqlite"
    SUPABASE = "supabase"


class StoreConfigError(ValueError):
    """The settings cannot name a usable store; the message says which setting is missing."""


class StoreUnavailable(RuntimeError):
    """The store cannot be reached or its schema is not in place; the message says what to do."""


@dataclass(frozen=True)
class StoreConfig:
    db_type: DbType = DbType.SQLITE
    db_file: str = "tasks.db"
    busy_timeout_seconds: float = 30.0
    # Supabase/Postgres: a direct Postgres URL, or the Supabase REST URL + a service key.
    db_url: str | None = None
    supabase_url: str | None = None
    supabase_key: str | None = None
    storage_bucket: str = "image_uploads"

    @property
    def has_storage(self) -> bool:
        """Outputs go to Supabase Storage when the project URL and a key are known (API mode always)."""
        return bool(self.supabase_url and self.supabase_key)

    def __repr__(self) -> str:  # keys never end up in logs or tracebacks
        return (
            f"StoreConfig(db_type={self.db_type.value!r}, db_file={self.db_file!r}, "
            f"db_url={'set' if self.db_url else None}, supabase_url={self.supabase_url!r}, "
            f"supabase_key={'set' if self.supabase_key else None})"
        )

    def validate(self) -> None:
        if self.db_type is DbType.SUPABASE and not self.db_url and not (self.supabase_url and self.supabase_key):
            missing = []
            if not self.supabase_url:
                missing.append("--supabase-url / SUPABASE_URL")
            if not self.supabase_key:
                missing.append("--supabase-access-token / SUPABASE_SERVICE_ROLE_KEY")
            raise StoreConfigError(
                "--db-type supabase needs either a direct Postgres URL (--db-url / SUPABASE_DB_URL) or "
                f"the Supabase API settings; missing: {', '.join(missing)}. Refusing to fall back to SQLite."
            )
