"""Reads the SQL that lives in ``source/db/sql/<dialect>/``: named queries and numbered migrations."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SQL_ROOT = Path(__file__).parent / "sql"
_NAME_LINE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_MIGRATION_FILE = re.compile(r"^(\d{3})_(\w+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:03d}_{self.name}"


@cache
def load_queries(dialect: str) -> dict[str, str]:
    """``-- name: foo`` blocks of ``queries.sql`` as {name: sql}."""
    text = (SQL_ROOT / dialect / "queries.sql").read_text()
    parts = _NAME_LINE.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@cache
def list_migrations(dialect: str, folder_name: str = "migrations") -> tuple[Migration, ...]:
    """The numbered files of ``sql/<dialect>/<folder_name>`` (``reigh_guest``: the guest set of a Reigh
    database, docs/reigh.md)."""
    folder = SQL_ROOT / dialect / folder_name
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name} must be named NNN_description.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration numbers in {folder}")
    return tuple(found)
