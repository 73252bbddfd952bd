"""Bearer tokens with two scopes (read, write); open access only for a server bound to loopback."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from enum import IntEnum

from source.logging_utils import register_secret

COOKIE = "tasks_token"
MIN_TOKEN_CHARS = 12


class Scope(IntEnum):
    NONE = 0
    READ = 1
    WRITE = 2


class AuthConfigError(ValueError):
    """The server would be reachable from other machines with no token required."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Tokens:
    """Only digests are kept: a token is compared in constant time and never held as text."""

    read: tuple[bytes, ...] = ()
    write: tuple[bytes, ...] = ()

    @classmethod
    def from_values(cls, read: tuple[str, ...] | list[str] = (), write: tuple[str, ...] | list[str] = ()) -> Tokens:
        for token in (*read, *write):
            register_secret(token)
            if len(token) < MIN_TOKEN_CHARS:
                raise AuthConfigError(f"a token of {len(token)} characters is too easy to guess; "
                                      f"use at least {MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 24`)")
        return cls(tuple(_digest(t) for t in read if t), tuple(_digest(t) for t in write if t))

    @property
    def required(self) -> bool:
        return bool(self.read or self.write)

    def scope_of(self, token: str | None) -> Scope:
        if not self.required:
            return Scope.WRITE
        if not token:
            return Scope.NONE
        digest = _digest(token)
        if any(hmac.compare_digest(digest, known) for known in self.write):
            return Scope.WRITE
        if any(hmac.compare_digest(digest, known) for known in self.read):
            return Scope.READ
        return Scope.NONE


def check_bind(host: str, tokens: Tokens) -> None:
    """No tokens is allowed only when nothing but this machine can connect."""
    if tokens.required or is_loopback(host):
        return
    raise AuthConfigError(
        f"--host {host} is reachable from other machines: give --read-token/--write-token "
        "(env TASKS_READ_TOKENS / TASKS_WRITE_TOKENS), or bind to 127.0.0.1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
