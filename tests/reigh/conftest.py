"""A Reigh-shaped database per test: tests/reigh/reigh_schema.sql (written from Reigh's migrations) loaded into a
fresh schema of the real Postgres, with Supabase's roles, its default grants and auth.uid()/auth.role()."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
import pytest

from tests.pg_fixtures import SUPABASE_DEFAULT_PRIVILEGES_SQL, schema_of, supabase_roles  # noqa: F401  (fixture)

REIGH_SCHEMA = Path(__file__).with_name("reigh_schema.sql")

# auth.role() as Supabase defines it: the role claim of the request's JWT (PostgREST sets request.jwt.claims).
AUTH_ROLE_SQL = """
SELECT pg_advisory_xact_lock(hashtext('tests:supabase_roles'));
CREATE OR REPLACE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT COALESCE(NULLIF(current_setting('request.jwt.claim.role', true), ''),
                    NULLIF(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
$$;
"""


@dataclass(frozen=True)
class ReighUser:
    id: UUID
    project_id: UUID
    token: str  # a personal access token, stored plain as Reigh's generate-pat stores it


def load_reigh_schema(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(AUTH_ROLE_SQL)
        conn.execute(SUPABASE_DEFAULT_PRIVILEGES_SQL.format(schema=f'"{schema_of(url)}"'))
        conn.execute(REIGH_SCHEMA.read_text())


@pytest.fixture
def reigh_url(supabase_roles: str, postgres_schema_url: str) -> str:  # noqa: F811  (fixture)
    """A fresh schema holding Reigh's tables, triggers, policies and claim functions (not migrated by us)."""
    load_reigh_schema(postgres_schema_url)
    return postgres_schema_url


def add_reigh_user(url: str, *, credits: float = 100.0, in_cloud: bool | None = None) -> ReighUser:
    """A user with a project, credits granted through the ledger (the only way Reigh moves credits) and a PAT."""
    user_id, project_id, token = uuid4(), uuid4(), secrets.token_urlsafe(24)
    settings = {} if in_cloud is None else {"ui": {"generationMethods": {"inCloud": in_cloud, "onComputer": True}}}
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT set_config('request.jwt.claims', '{\"role\": \"service_role\"}', true)")
        conn.execute("INSERT INTO users (id, name, settings) VALUES (%s, 'user', %s)",
                     (user_id, json.dumps(settings)))
        conn.execute("INSERT INTO projects (id, name, user_id) VALUES (%s, 'project', %s)", (project_id, user_id))
        if credits:
            conn.execute("INSERT INTO credits_ledger (user_id, amount, type) VALUES (%s, %s, 'manual')",
                         (user_id, credits))
        conn.execute("INSERT INTO user_api_tokens (user_id, token, label) VALUES (%s, %s, 'worker')",
                     (user_id, token))
    return ReighUser(user_id, project_id, token)


def insert_reigh_task(url: str, project_id: UUID, task_type: str, params: dict,
                      dependant_on: list[UUID] | None = None) -> UUID:
    """A row as Reigh's create-task inserts it (service role: status Queued, dependant_on an array)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("INSERT INTO tasks (task_type, params, project_id, dependant_on) VALUES (%s, %s, %s, %s) "
                           "RETURNING id", (task_type, json.dumps(params), project_id, dependant_on)).fetchone()
    return row[0]
