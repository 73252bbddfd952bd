"""Outputs in S3-compatible storage (AWS S3, Cloudflare R2, Backblaze B2, MinIO): ``--storage s3://bucket/prefix``,
the endpoint, region and keys from the environment, ``output_location`` a public or presigned URL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from source.logging_utils import register_secret
from source.worker.publishing import UploadPublisher

# SigV4 presigned URLs live at most seven days; that is also the default.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
MIB = 2**20
# S3's smallest part is 5 MiB (except the last); below the threshold a file goes up in one PUT.
MIN_PART_BYTES = 5 * MIB
DEFAULT_MULTIPART_THRESHOLD_MB = 64
DEFAULT_MULTIPART_CHUNK_MB = 16
# Error codes S3-compatible servers answer for a moment's trouble (besides any 5xx, 408, 429).
TRANSIENT_CODES = frozenset({"SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError",
                             "ServiceUnavailable", "Throttling", "ThrottlingException"})


class S3SettingsError(ValueError):
    """``--storage`` or an ``S3_*`` variable cannot be used; the message names it."""


@dataclass(frozen=True)
class S3Target:
    """Where outputs go and how their URLs are made. Keys left None fall back to boto3's own chain
    (``AWS_ACCESS_KEY_ID``..., an instance profile)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    public_base_url: str | None = None
    presign_seconds: int = MAX_PRESIGN_SECONDS
    multipart_threshold_bytes: int = DEFAULT_MULTIPART_THRESHOLD_MB * MIB
    multipart_chunk_bytes: int = DEFAULT_MULTIPART_CHUNK_MB * MIB

    def __repr__(self) -> str:  # keys never end up in logs or tracebacks
        return (f"S3Target(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint_url={self.endpoint_url!r}, "
                f"region={self.region!r}, public_base_url={self.public_base_url!r})")


def parse_s3_target(storage: str, env: Mapping[str, str]) -> S3Target:
    """``s3://bucket[/prefix]`` and the ``S3_*`` variables as an S3Target (the secret key registered for
    redaction)."""
    parts = urlsplit(storage)
    if parts.scheme != "s3" or not parts.netloc:
        raise S3SettingsError(f"--storage must look like s3://bucket/prefix, not {storage!r}")
    if parts.query or parts.fragment:
        raise S3SettingsError("--storage s3://bucket/prefix takes no query or fragment")
    presign = _int(env, "S3_PRESIGN_EXPIRES_SECONDS", MAX_PRESIGN_SECONDS)
    if not 1 <= presign <= MAX_PRESIGN_SECONDS:
        raise S3SettingsError(f"S3_PRESIGN_EXPIRES_SECONDS must be between 1 and {MAX_PRESIGN_SECONDS} "
                              f"(SigV4's seven days), not {presign}")
    threshold = _int(env, "S3_MULTIPART_THRESHOLD_MB", DEFAULT_MULTIPART_THRESHOLD_MB) * MIB
    chunk = _int(env, "S3_MULTIPART_CHUNK_MB", DEFAULT_MULTIPART_CHUNK_MB) * MIB
    if chunk < MIN_PART_BYTES or threshold < MIN_PART_BYTES:
        raise S3SettingsError("S3_MULTIPART_THRESHOLD_MB and S3_MULTIPART_CHUNK_MB must be 5 or more "
                              "(S3's smallest part)")
    public = env.get("S3_PUBLIC_BASE_URL") or None
    if public is not None and urlsplit(public).scheme not in ("http", "https"):
        raise S3SettingsError(f"S3_PUBLIC_BASE_URL must be an http(s) URL, not {public!r}")
    secret = env.get("S3_SECRET_ACCESS_KEY") or None
    register_secret(secret)
    return S3Target(
        bucket=parts.netloc, prefix=parts.path.strip("/"), endpoint_url=env.get("S3_ENDPOINT_URL") or None,
        region=env.get("S3_REGION") or None, access_key_id=env.get("S3_ACCESS_KEY_ID") or None,
        secret_access_key=secret, public_base_url=public, presign_seconds=presign,
        multipart_threshold_bytes=threshold, multipart_chunk_bytes=chunk,
    )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise S3SettingsError(f"{name} must be a whole number, not {text!r}") from None


class S3Publisher(UploadPublisher):
    """boto3's managed upload (multipart past the threshold, parts in parallel); botocore's own retries are
    off so that the one retry helper decides (source/retry.py). The location is
    ``S3_PUBLIC_BASE_URL/<key>`` when set (a public bucket, R2's r2.dev or a CDN), else a presigned GET."""

    service = "S3 storage"

    def __init__(self, target: S3Target, *, client: Any = None, **options: Any) -> None:
        super().__init__(target.bucket, prefix=target.prefix, **options)
        from boto3.s3.transfer import TransferConfig

        self.target = target
        self._client = client or make_s3_client(target)
        self._transfer = TransferConfig(multipart_threshold=target.multipart_threshold_bytes,
                                        multipart_chunksize=target.multipart_chunk_bytes, use_threads=True)

    def _upload(self, object_path: str, local_path: Path, content_type: str) -> str:
        self._client.upload_file(str(local_path), self.bucket, object_path, Config=self._transfer,
                                 ExtraArgs={"ContentType": content_type})
        if self.target.public_base_url:
            return f"{self.target.public_base_url.rstrip('/')}/{quote(object_path)}"
        return self._client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": object_path},
                                                   ExpiresIn=self.target.presign_seconds)

    def is_outage(self, exc: BaseException) -> bool:
        return is_s3_outage(exc)


def make_s3_client(target: S3Target) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(signature_version="s3v4", retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=10, read_timeout=60)
    return boto3.session.Session().client(
        "s3", endpoint_url=target.endpoint_url, region_name=target.region or "us-east-1",
        aws_access_key_id=target.access_key_id, aws_secret_access_key=target.secret_access_key, config=config)


def is_s3_outage(exc: BaseException) -> bool:
    """The network, a timeout, or the server answering 5xx / 408 / 429 / SlowDown: worth another try. A refusal
    (no such bucket, bad keys, access denied) or a local problem is not."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:
        exc = exc.__context__  # upload_file wraps the client's error
    if isinstance(exc, ConnectionError | HTTPClientError):
        return True
    if not isinstance(exc, ClientError):
        return False
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return status >= 500 or status in (408, 429) or error.get("Code") in TRANSIENT_CODES
