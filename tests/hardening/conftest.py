"""Fixtures of the hardening tests."""

from tests.hardening.raw_rows import raw_backend  # noqa: F401  (fixture)
