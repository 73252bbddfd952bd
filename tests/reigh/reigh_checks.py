"""Reigh's own behaviour on its database, as its browser, edge functions and triggers exercise it: the checks
that must pass the same before and after this worker's ``--migrate-only``."""

from __future__ import annotations

import json
from uuid import UUID

import psycopg
import pytest

from tests.reigh.conftest import add_reigh_user, insert_reigh_task


def as_browser(conn: psycopg.Connection, user_id: UUID) -> None:
    """What PostgREST does for a signed-in browser request (inside the current transaction)."""
    conn.execute("SET LOCAL ROLE authenticated")
    conn.execute("SELECT set_config('request.jwt.claims', %s, true)",
                 (json.dumps({"sub": str(user_id), "role": "authenticated"}),))


def as_service_role(conn: psycopg.Connection) -> None:
    conn.execute("SET LOCAL ROLE service_role")
    conn.execute("SELECT set_config('request.jwt.claims', '{\"role\": \"service_role\"}', true)")


def check_reigh_behaviour(url: str) -> None:
    alice, bob = add_reigh_user(url), add_reigh_user(url)
    with psycopg.connect(url, autocommit=True) as conn:
        # the browser inserts a task into its own project ...
        with conn.transaction():
            as_browser(conn, alice.id)
            own = conn.execute("INSERT INTO tasks (task_type, params, project_id) VALUES ('t2v', '{}', %s) "
                               "RETURNING id", (alice.project_id,)).fetchone()[0]
        # ... and is refused another user's project
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            as_browser(conn, alice.id)
            conn.execute("INSERT INTO tasks (task_type, params, project_id) VALUES ('t2v', '{}', %s)",
                         (bob.project_id,))
        # "Users can update their own tasks (no timing)": the browser edits its row, not another's, not timings
        with conn.transaction():
            as_browser(conn, alice.id)
            edited = conn.execute("UPDATE tasks SET params = '{\"prompt\": \"edited\"}' WHERE id = %s RETURNING id",
                                  (own,)).fetchall()
        assert len(edited) == 1
        with pytest.raises(psycopg.errors.RaiseException, match="Timing fields"), conn.transaction():
            as_browser(conn, alice.id)
            conn.execute("UPDATE tasks SET generation_started_at = now() WHERE id = %s", (own,))
        bobs = insert_reigh_task(url, bob.project_id, "t2v", {})
        with conn.transaction():
            as_browser(conn, alice.id)
            assert conn.execute("UPDATE tasks SET params = '{}' WHERE id = %s RETURNING id", (bobs,)).fetchall() == []
        # the token lookup of Reigh's edge functions: .eq("token", token) on the plain token
        with conn.transaction():
            as_service_role(conn)
            found = conn.execute("SELECT user_id FROM user_api_tokens WHERE token = %s", (alice.token,)).fetchall()
            assert found == [(alice.id,)]
            assert conn.execute("SELECT verify_api_token(%s)", (bob.token,)).fetchone()[0] is True
        # Reigh's claim function, as claim-next-task calls it for a cloud worker
        with conn.transaction():
            as_service_role(conn)
            conn.execute("INSERT INTO workers (id, instance_type) VALUES ('reigh-gpu-1', 'external')")
            claimed = conn.execute("SELECT task_id, user_id FROM claim_next_task_service_role("
                                   "'reigh-gpu-1', false, 'gpu', false, 5)").fetchall()
        assert claimed == [(own, alice.id)]
        state = conn.execute("SELECT status::text, worker_id, generation_started_at IS NOT NULL FROM tasks "
                             "WHERE id = %s", (own,)).fetchone()
        assert state == ("In Progress", "reigh-gpu-1", True)
        # its billing-on-cancel trigger: a cancelled orchestrator takes its completed children's start time
        orchestrator = insert_reigh_task(url, alice.project_id, "travel_orchestrator",
                                         {"orchestrator_details": {"orchestrator_task_id": "travel-x"}})
        with conn.transaction():
            as_service_role(conn)
            child = conn.execute(
                "INSERT INTO tasks (task_type, params, project_id, status, generation_started_at, "
                "generation_processed_at) VALUES ('travel_segment', %s, %s, 'Complete', "
                "now() - interval '1 minute', now()) RETURNING generation_started_at",
                (json.dumps({"orchestrator_task_id_ref": str(orchestrator)}), alice.project_id)).fetchone()[0]
            conn.execute("UPDATE tasks SET status = 'Cancelled' WHERE id = %s", (orchestrator,))
        billed = conn.execute("SELECT generation_started_at, generation_processed_at IS NOT NULL FROM tasks "
                              "WHERE id = %s", (orchestrator,)).fetchone()
        assert billed == (child, True)
        # credits move only through the ledger (even for a table owner outside the service role)
        with pytest.raises(psycopg.errors.RaiseException, match="Direct credit updates"), conn.transaction():
            conn.execute("UPDATE users SET credits = 1e6 WHERE id = %s", (alice.id,))
