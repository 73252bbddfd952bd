"""A webhook receiver for the tests: verifies each delivery's Standard Webhooks signature itself (no code of the
worker's), records it, and answers what the test scripts."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.helpers import http_server

SECRET = "whsec_" + base64.b64encode(b"the tests' webhook signing key!!").decode()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's side of the spec, as docs/production.md shows it."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, s.split(",", 1)[1]) for s in headers["webhook-signature"].split())


@dataclass
class Delivery:
    headers: dict[str, str]
    body: dict[str, Any]
    signature_ok: bool
    at: float

    @property
    def type(self) -> str:
        return self.body["type"]


@dataclass
class Receiver:
    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    # (delivery) -> HTTP status to answer; may block (a slow receiver)
    answer: Callable[[Delivery], int] = lambda _d: 200
    lock: threading.Lock = field(default_factory=threading.Lock)

    def types(self) -> list[str]:
        with self.lock:
            return [d.type for d in self.deliveries]


@contextlib.contextmanager
def webhook_receiver(secret: str = SECRET) -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            delivery = Delivery(headers, json.loads(body), verify(secret, headers, body), time.time())
            with receiver.lock:
                receiver.deliveries.append(delivery)
            status = receiver.answer(delivery)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    with http_server(Handler) as url:
        receiver.url = url + "/hooks"
        yield receiver
