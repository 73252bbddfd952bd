"""Reading a raw ``tasks`` row without trusting it: what a producer wrote with plain SQL may be undecodable
or of the wrong type. Problems are collected per column, so the claim can fail the row with one message
instead of choking on it (and stopping every worker behind it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_TASK_ID_CHARS = 200
SHOWN_BYTES = 120
# Columns a claimed task is run from: a problem in any of them fails the row at claim.
CHECKED_TEXT = ("id", "task_type", "params", "dependant_on", "project_id", "parent_task_id", "child_key")
CHECKED_INTEGERS = ("priority", "attempts", "max_attempts")


class UndecodedText(bytes):
    """A TEXT value whose bytes are not UTF-8: SQLite stores whatever bytes a producer gives it."""


def decode_text(raw: bytes) -> str | UndecodedText:
    """sqlite3 ``text_factory``: a column that is not UTF-8 comes back as its bytes instead of an error
    that aborts the whole statement (a claim that can never return the row, for every worker)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return UndecodedText(raw)


def shown(raw: bytes) -> str:
    """Bytes as escaped, printable text (the error message a person reads)."""
    text = repr(bytes(raw[:SHOWN_BYTES]))
    return text + (f" … ({len(raw)} bytes)" if len(raw) > SHOWN_BYTES else "")


class RowReader:
    """Typed access to one row; each wrong value is recorded in ``problems`` and read as something
    harmless (escaped text, a default), so listing and showing a broken row still work."""

    def __init__(self, row: Mapping[str, Any]) -> None:
        self.row = row
        self.keys = set(row.keys())
        self.problems: list[str] = []

    def raw(self, name: str, default: Any = None) -> Any:
        return self.row[name] if name in self.keys else default

    def text(self, name: str) -> str | None:
        value = self.raw(name)
        checked = name in CHECKED_TEXT
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, UndecodedText):
            if checked:
                self.problems.append(f"{name} is not valid UTF-8 text: {shown(value)}")
            return shown(value)
        if isinstance(value, bytes | bytearray | memoryview):
            if checked:
                self.problems.append(f"{name} is a BLOB, not text: {shown(bytes(value))}")
            return shown(bytes(value))
        return str(value)  # Postgres uuid, a number in a text column: the text is what was meant

    def integer(self, name: str, default: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        shown_value = shown(value) if isinstance(value, bytes) else repr(value)
        if name in CHECKED_INTEGERS:
            self.problems.append(f"{name} is {shown_value}, not an integer")
        return default

    def number(self, name: str) -> float | None:
        value = self.raw(name)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def task_id(self) -> str:
        """The id as text; over the length limit is a problem (output and work folder names derive from it)."""
        task_id = self.text("id")
        if task_id is None:
            self.problems.append("id is NULL")
            return ""
        if isinstance(self.raw("id"), str) and len(task_id) > MAX_TASK_ID_CHARS:
            self.problems.append(f"id is {len(task_id)} characters; the limit is {MAX_TASK_ID_CHARS}")
        return task_id
