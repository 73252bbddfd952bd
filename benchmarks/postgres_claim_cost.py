"""Cost of one claim as the queue grows to 100k Queued rows, half of them in long dependency chains that
sit ahead of the ready rows: it must stay flat. Prints the plan the claim really runs (auto_explain of the
statement inside claim_next_task), which walks the partial index of ready rows.

    python benchmarks/postgres_claim_cost.py [--sizes 1000,10000,100000] [--chain-length 1000]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import click
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.pg_schema import DEFAULT_URL, fresh_schema  # noqa: E402
from source.db.postgres import PostgresTaskStore  # noqa: E402

CLAIMS = 200


def _fill(url: str, rows: int, chain_length: int) -> None:
    """rows/2 in chains of chain_length (each link waits on the one before; only chain heads are
    ready), inserted first so they are the oldest; then rows/2 independent rows."""
    chained = rows // 2
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tasks (id, task_type, params, dependant_on, created_at) "
            "SELECT 'c' || (g / %(len)s) || '-' || (g %% %(len)s), 'ping', '{}'::jsonb, "
            "       CASE WHEN g %% %(len)s = 0 THEN NULL ELSE 'c' || (g / %(len)s) || '-' || (g %% %(len)s - 1) END, "
            "       now() - interval '1 hour' + g * interval '1 microsecond' "
            "FROM generate_series(0, %(n)s - 1) AS g ORDER BY g", {"len": chain_length, "n": chained})
        conn.execute("INSERT INTO tasks (task_type, params) SELECT 'ping', jsonb_build_object('model', 'm' || (g %% 3)) "
                     "FROM generate_series(1, %s) AS g", (rows - chained,))
        conn.execute("ANALYZE tasks")
        counts = dict(conn.execute("SELECT blocked_by_dependency, count(*) FROM tasks GROUP BY 1").fetchall())
    print(f"  queued rows: {rows:,} (blocked behind a dependency: {counts.get(True, 0):,}, ready: "
          f"{counts.get(False, 0):,})")


def _claim_ms(store: PostgresTaskStore, affinity: bool, claims: int = CLAIMS) -> list[float]:
    times = []
    for i in range(claims):
        started = time.perf_counter()
        task = store.claim_next_task(f"w{i % 8}", lease_seconds=600,
                                     resident_model="m1" if affinity else None,
                                     resident_task_types=("ping",) if affinity else ())
        times.append((time.perf_counter() - started) * 1000)
        assert task is not None
    return times


def _plan(url: str) -> str:
    lines: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.add_notice_handler(lambda notice: lines.append(notice.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")
        conn.execute("SET auto_explain.log_min_duration = 0")
        conn.execute("SET auto_explain.log_nested_statements = on")
        conn.execute("SET auto_explain.log_analyze = on")
        conn.execute("SET auto_explain.log_buffers = on")
        conn.execute("SET client_min_messages = log")
        conn.execute("SELECT id FROM claim_next_task('explain', 600, 'm1', ARRAY['ping'], 120)").fetchall()
    claim = next(line for line in lines if "WITH head AS MATERIALIZED" in line)
    return claim[claim.index("Update on tasks"):]  # the plan, without the query text


@click.command()
@click.option("--sizes", default="1000,10000,100000", show_default=True)
@click.option("--chain-length", default=1000, show_default=True)
@click.option("--url", default=DEFAULT_URL, show_default=True, help="Admin URL; a fresh schema is made per size.")
def main(sizes: str, chain_length: int, url: str) -> None:
    medians: dict[int, tuple[float, float]] = {}
    plan = ""
    for size in (int(s) for s in sizes.split(",")):
        with fresh_schema(url) as schema_url:
            print(f"size {size:,}:")
            _fill(schema_url, size, min(chain_length, max(1, size // 2)))
            store = PostgresTaskStore(schema_url, max_connections=1)
            _claim_ms(store, affinity=False, claims=20)  # warm: connection, prepared plans, caches
            plain = statistics.median(_claim_ms(store, affinity=False))
            affine = statistics.median(_claim_ms(store, affinity=True))
            store.close()
            medians[size] = (plain, affine)
            print(f"  median claim: {plain:.2f} ms (no resident model), {affine:.2f} ms (affinity probes)")
            plan = _plan(schema_url)
    smallest, largest = min(medians), max(medians)
    print(f"ratio {largest:,} rows / {smallest:,} rows: {medians[largest][0] / medians[smallest][0]:.2f}x (plain), "
          f"{medians[largest][1] / medians[smallest][1]:.2f}x (affinity)")
    print(f"\nplan of the claim statement at {largest:,} rows (auto_explain, inside claim_next_task):\n{plan}")


if __name__ == "__main__":
    main()
