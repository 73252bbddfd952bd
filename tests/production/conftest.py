"""An S3-compatible HTTP server (moto's server mode) for the tests of outputs in S3 storage."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str

    @property
    def env(self) -> dict[str, str]:
        """What a worker process needs to reach it (no real AWS settings leak in)."""
        return {"S3_ENDPOINT_URL": self.endpoint_url, "S3_REGION": "us-east-1", "S3_ACCESS_KEY_ID": "testkey",
                "S3_SECRET_ACCESS_KEY": "testsecret-0123456789"}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="testkey", aws_secret_access_key="testsecret-0123456789")


@pytest.fixture(scope="session")
def _moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_server(_moto_endpoint: str) -> S3Server:
    """The server with a fresh bucket of this test's own."""
    server = S3Server(_moto_endpoint, f"outputs-{uuid.uuid4().hex[:12]}")
    server.client().create_bucket(Bucket=server.bucket)
    return server
