"""The HTTP API under load, next to the direct path, and what live-update (SSE) clients cost the database.

1. Direct: ``store.add_task`` in-process, and ``tasks add`` (CLI, in-process: opens the store each time).
2. HTTP: ``--clients`` concurrent clients each POST /api/tasks then GET /api/tasks/{id}, against a local
   uvicorn server on the same SQLite file: requests/s and p50/p99 latency per request kind.
3. SSE: 1 and then ``--sse-clients`` clients follow /api/events while rows arrive at a fixed rate: store calls
   per second (one change listener fans out, so the count must not grow with the clients) and the delay from
   insert to the event reaching each client.

    python benchmarks/web_api_load.py [--requests 400] [--clients 16] [--sse-clients 100] [--seconds 5]
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import click.testing
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import source.cli.tasks as task_cli  # noqa: E402
from source.db.models import NewTask  # noqa: E402
from source.db.sqlite import SqliteTaskStore  # noqa: E402
from source.logging_utils import configure_logging  # noqa: E402
from source.web.app import create_app  # noqa: E402
from tests.web.live import CountingStore, serve_in_thread  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def report(name: str, latencies: list[float], elapsed: float) -> str:
    return (f"{name:<34} {len(latencies) / elapsed:8.0f} req/s   p50 {percentile(latencies, 0.5) * 1000:7.2f} ms"
            f"   p99 {percentile(latencies, 0.99) * 1000:7.2f} ms")


def timed_calls(call: Callable[[int], None], count: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        started = time.perf_counter()
        call(i)
        with lock:
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(count)))
    return latencies, time.perf_counter() - started


def direct(db: Path, requests: int) -> list[str]:
    store = SqliteTaskStore(db)
    latencies, elapsed = timed_calls(lambda i: store.add_task(NewTask("ping", {"n": i})), requests, 1)
    lines = [report("direct store.add_task (1 thread)", latencies, elapsed)]
    runner = click.testing.CliRunner()
    cli_count = max(20, requests // 10)

    def add(i: int) -> None:
        result = runner.invoke(task_cli.cli, ["add", "--db-file", str(db), "ping", json.dumps({"n": i})])
        assert result.exit_code == 0, result.output

    latencies, elapsed = timed_calls(add, cli_count, 1)
    lines.append(report("tasks add, in-process (1 thread)", latencies, elapsed))
    store.close()
    return lines


def over_http(url: str, requests: int, clients: int) -> list[str]:
    posts: list[float] = []
    gets: list[float] = []
    lock = threading.Lock()
    local = threading.local()

    def one(i: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=url, timeout=30)
        started = time.perf_counter()
        response = client.post("/api/tasks", json={"task_type": "ping", "params": {"n": i}})
        posted = time.perf_counter()
        assert response.status_code == 201, response.text
        assert client.get(f"/api/tasks/{response.json()['id']}").status_code == 200
        with lock:
            posts.append(posted - started)
            gets.append(time.perf_counter() - posted)

    _, elapsed = timed_calls(one, requests, clients)
    return [report(f"HTTP POST /api/tasks ({clients} clients)", posts, elapsed),
            report(f"HTTP GET /api/tasks/{{id}} ({clients} clients)", gets, elapsed)]


async def follow_events(url: str, clients: int, seconds: float, db: Path, store: CountingStore, hub) -> str:
    """``clients`` streams open; rows arrive every 0.25 s for ``seconds``; store calls and delivery delays."""
    inserted: dict[str, float] = {}
    delays: list[float] = []
    ready = asyncio.Event()
    opened = 0

    async def client() -> None:
        nonlocal opened
        seen: set[str] = set()
        async with httpx.AsyncClient(timeout=None) as http, http.stream("GET", f"{url}/api/events") as response:
            name = None
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:") and name == "overview":
                    if not seen:
                        opened += 1
                        if opened == clients:
                            ready.set()
                    now = time.perf_counter()
                    for row in json.loads(line[5:])["tasks"]:
                        if row["id"] in inserted and row["id"] not in seen:
                            seen.add(row["id"])
                            delays.append(now - inserted[row["id"]])
                    seen.add("")

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    await asyncio.wait_for(ready.wait(), timeout=60)
    await asyncio.sleep(0.5)
    producer = SqliteTaskStore(db)
    before, reads_before, started = store.reads(), hub.reads, time.perf_counter()
    rows = int(seconds / 0.25)
    for i in range(rows):
        task_id = f"sse-{clients}-{i}"
        inserted[task_id] = time.perf_counter()
        await asyncio.to_thread(producer.add_task, NewTask("ping", {}, id=task_id))
        await asyncio.sleep(0.25)
    await asyncio.sleep(1.0)  # the last row reaches everyone
    elapsed = time.perf_counter() - started
    calls, snapshots = store.reads() - before, hub.reads - reads_before
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    producer.close()
    expected = rows * clients
    return (f"SSE {clients:>4} clients: {calls / elapsed:6.1f} store calls/s ({snapshots} snapshots for {rows} rows)"
            f"   delivered {len(delays)}/{expected}   insert→event p50 {percentile(delays, 0.5) * 1000:6.1f} ms"
            f"  p99 {percentile(delays, 0.99) * 1000:6.1f} ms")


@click.command()
@click.option("--requests", type=int, default=400, show_default=True)
@click.option("--clients", type=int, default=16, show_default=True)
@click.option("--sse-clients", type=int, default=100, show_default=True)
@click.option("--seconds", type=float, default=5.0, show_default=True)
def main(requests: int, clients: int, sse_clients: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "tasks.db"
        raw = SqliteTaskStore(db)
        raw.migrate()
        lines = direct(db, requests)
        store = CountingStore(raw)
        app = create_app(store, output_root=Path(tmp))
        with serve_in_thread(app) as url:
            lines += over_http(url, requests, clients)
            for count in (1, sse_clients):
                lines.append(asyncio.run(follow_events(url, count, seconds, db, store, app.state.hub)))
        raw.close()
    for line in lines:
        click.echo(line)
    click.echo("(SQLite file, one uvicorn server process in this process, clients on the same 2 cores)")


if __name__ == "__main__":
    configure_logging("json")
    logging.getLogger().setLevel(logging.WARNING)  # request lines would dominate the run
    main()
