"""``--migrate-only`` on a Reigh database: nothing of Reigh's changes, only the guest's own schema appears,
and Reigh's own behaviour is the same afterwards."""

from __future__ import annotations

import psycopg
import pytest

from source.db.config import StoreUnavailable
from source.db.reigh_guest import guest_schema_for
from tests.helpers import run_worker
from tests.pg_fixtures import migrate, schema_of
from tests.reigh.conftest import add_reigh_user, insert_reigh_task, reigh_catalog
from tests.reigh.reigh_checks import check_reigh_behaviour

pytestmark = pytest.mark.postgres


def _schemas(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace")}


def _populate(url: str) -> None:
    user = add_reigh_user(url)
    first = insert_reigh_task(url, user.project_id, "wan_2_2_t2i", {"prompt": "a cat"})
    insert_reigh_task(url, user.project_id, "travel_segment", {"prompt": "next"}, dependant_on=[first])


def test_migrate_only_leaves_every_part_of_reigh_as_it_was_and_adds_one_schema(reigh_url, tmp_path):
    _populate(reigh_url)
    before, schemas_before = reigh_catalog(reigh_url), _schemas(reigh_url)

    dry = run_worker(reigh_url, tmp_path / "out", "--migrate-only", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "-- migration 040_guest_state\n" in dry.stdout and "CREATE TABLE task_state" in dry.stdout
    guest = guest_schema_for(schema_of(reigh_url))
    assert reigh_catalog(reigh_url) == before and guest not in _schemas(reigh_url)  # not even the schema

    done = run_worker(reigh_url, tmp_path / "out", "--migrate-only")
    assert done.returncode == 0, done.stderr
    assert ("migrations applied: 040_guest_state, 041_guest_verbs, 042_guest_operator_reads, "
            "043_generation_routing, 044_webhook_deliveries") in done.stdout

    assert reigh_catalog(reigh_url) == before
    # other tests create schemas on the same server meanwhile: ours are the ones named after this one
    assert {name for name in _schemas(reigh_url) - schemas_before if schema_of(reigh_url) in name} == {guest}
    with psycopg.connect(reigh_url, autocommit=True) as conn:
        for role in ("anon", "authenticated"):
            assert not conn.execute("SELECT has_schema_privilege(%s, %s, 'USAGE')", (role, guest)).fetchone()[0]
    again = run_worker(reigh_url, tmp_path / "out", "--migrate-only")
    assert "migrations applied: none (schema up to date)" in again.stdout
    assert reigh_catalog(reigh_url) == before


def test_reighs_own_behaviour_is_unchanged_after_migrate_only(reigh_url, tmp_path):
    """Browser insert into its own project and refusal into another's, "Users can update their own tasks (no
    timing)", the timing and credit triggers, its claim function, its billing-on-cancel trigger and the
    plain-token lookup, all after the guest migrated."""
    done = run_worker(reigh_url, tmp_path / "out", "--migrate-only")
    assert done.returncode == 0, done.stderr
    check_reigh_behaviour(reigh_url)


def test_the_ordinary_migrations_refuse_a_reigh_database_and_apply_nothing(reigh_url):
    _populate(reigh_url)
    before = reigh_catalog(reigh_url)
    with pytest.raises(StoreUnavailable, match="is a Reigh database"):
        migrate(reigh_url)
    assert reigh_catalog(reigh_url) == before


def test_a_worker_on_an_unmigrated_reigh_database_says_how_to_migrate_and_changes_nothing(reigh_url, tmp_path):
    before = reigh_catalog(reigh_url)
    done = run_worker(reigh_url, tmp_path / "out", "--once")
    assert done.returncode == 4, done.stderr[-2000:]
    assert "the Reigh guest schema is not in place" in done.stderr and "--migrate-only" in done.stderr
    assert reigh_catalog(reigh_url) == before


def test_a_wake_mode_a_guest_cannot_honour_is_refused(reigh_url, tmp_path):
    done = run_worker(reigh_url, tmp_path / "out", "--migrate-only")
    assert done.returncode == 0, done.stderr
    refused = run_worker(reigh_url, tmp_path / "out", "--once", "--wake-mode", "doorbell")
    assert refused.returncode == 1 and "--wake-mode doorbell: on a Reigh database the worker polls" in refused.stderr
