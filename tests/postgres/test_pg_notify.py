"""What wakes a LISTENing worker: rows that become claimable or are cancelled, not every write."""

from __future__ import annotations

import pytest

from source.db.models import NewTask
from source.db.postgres import PostgresTaskStore

pytestmark = pytest.mark.postgres


def test_notify_only_when_a_row_becomes_claimable_or_is_cancelled(postgres_store, postgres_schema_url):
    store = PostgresTaskStore(postgres_schema_url, wake="all")  # the broadcast, for workers before 011
    try:
        store.wait_for_change(0.01)  # this thread's baseline
        parent = store.add_task(NewTask("ping", {}))
        assert store.wait_for_change(2.0)  # insert
        child = store.add_task(NewTask("ping", {}, dependant_on=parent))
        assert store.wait_for_change(2.0)
        lonely = store.add_task(NewTask("ping", {}, priority=-1))
        assert store.wait_for_change(2.0)

        assert store.claim_next_task("w", lease_seconds=30).id == parent
        assert not store.wait_for_change(0.3)  # a claim wakes nobody
        assert store.heartbeat(parent, "w", lease_seconds=30, progress=0.5)
        assert not store.wait_for_change(0.3)
        assert store.complete_task(parent, "w", output_location=None, result=None)
        assert store.wait_for_change(2.0)  # ... but completing it made the child claimable

        assert store.claim_next_task("w", lease_seconds=30).id == child
        assert not store.wait_for_change(0.3)
        assert store.complete_task(child, "w", output_location=None, result=None)
        assert not store.wait_for_change(0.3)  # nothing depends on the child
        assert store.cancel_task(lonely)
        assert store.wait_for_change(2.0)  # a cancel reaches the worker running the row
    finally:
        store.close()
