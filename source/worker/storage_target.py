"""Where a worker's outputs go, from its flags: S3-compatible storage (``--storage``), Supabase Storage, or local
paths. Apart from the publishers themselves (publishing.py, s3_storage.py), which it chooses among."""

from __future__ import annotations

import os
from collections.abc import Mapping

from source.db.config import StoreConfig
from source.worker.publishing import LocalPublisher, OutputPublisher, SupabaseStoragePublisher


def open_publisher(config: StoreConfig, *, keep_local: bool = False, storage: str | None = None,
                   env: Mapping[str, str] | None = None) -> OutputPublisher:
    """``storage`` (``--storage s3://bucket/prefix``) first, with the ``S3_*`` settings of ``env``; else
    Supabase Storage when the project URL and key are known; else local paths. ``keep_local``: keep the local
    copy of an uploaded output. Raises S3SettingsError for unusable S3 settings."""
    if storage:
        from source.worker.s3_storage import S3Publisher, parse_s3_target  # boto3: only when asked for

        return S3Publisher(parse_s3_target(storage, os.environ if env is None else env), keep_local=keep_local)
    if not config.has_storage:
        return LocalPublisher()
    from source.db.supabase_client import STORAGE_TIMEOUT_SECONDS, make_client

    assert config.supabase_url and config.supabase_key
    client = make_client(config.supabase_url, config.supabase_key, timeout_seconds=STORAGE_TIMEOUT_SECONDS)
    return SupabaseStoragePublisher(client, config.storage_bucket, keep_local=keep_local)
