"""Cross-site request forgery: a write a browser sends with the login cookie (or, on an open loopback server,
with no credential at all) must come from a page of this server. SameSite cookies do not tell ports or
subdomains apart, so a page on another port of the same host could cancel rows through the cookie.

A browser names the page that sent a request (Origin, or Referer): a write naming another origin is refused,
and one from a browser page must also carry the token this server put in its pages (``HEADER``), which a page
of another origin cannot read. Requests with a bearer header need neither (a browser never adds that header
on another site's behalf), nor do clients that are not browsers (no Origin, no Referer: curl, scripts)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class CsrfGuard:
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def token_for(self, cookie: str | None) -> str:
        """The token a page holds: bound to the cookie it was served with, and to this server's run."""
        return hmac.new(self.secret, (cookie or "").encode(), hashlib.sha256).hexdigest()

    def check(self, request: Request, cookie: str | None) -> None:
        sender = request.headers.get("origin") or request.headers.get("referer")
        if sender is None:
            return
        # host:port only: behind a TLS proxy the server may see http while the page was https
        if urlsplit(sender).netloc.lower() != request.headers.get("host", "").lower():
            raise HTTPException(403, f"a write from another origin ({sender[:200]}) is refused")
        if not hmac.compare_digest(request.headers.get(HEADER, ""), self.token_for(cookie)):
            raise HTTPException(403, f"a write from the page needs its {HEADER} header (reload the page)")
