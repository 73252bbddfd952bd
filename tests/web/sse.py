"""A minimal Server-Sent Events reader over httpx, for tests and the load benchmark."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx


def events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event name, decoded data) for each event of an open streaming response."""
    name, data = "message", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def wait_for_event(client: httpx.Client, url: str, predicate: Callable[[str, Any], bool], *,
                   on_open: Callable[[], None] | None = None, headers: dict[str, str] | None = None) -> Any:
    """Open the stream, call ``on_open`` once the first event arrived, return the first event data that
    satisfies ``predicate``."""
    with client.stream("GET", url, headers=headers) as response:
        response.raise_for_status()
        opened = False
        for name, data in events(response):
            if not opened:
                opened = True
                if on_open:
                    on_open()
            if predicate(name, data):
                return data
    raise AssertionError("the stream ended")
