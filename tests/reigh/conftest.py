"""A Reigh-shaped database per test: tests/reigh/reigh_schema.sql (written from Reigh's migrations) loaded into a
fresh schema of the real Postgres, with Supabase's roles, its default grants and auth.uid()/auth.role()."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql

from source.db.reigh_guest import ReighGuestStore
from source.routing import known_task_types
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


@pytest.fixture
def guest_store(reigh_url: str) -> Iterator[ReighGuestStore]:
    """The guest store on a Reigh database after ``--migrate-only``, claiming the routing table's task types."""
    from source.db.reigh_guest import reigh_schema_of

    store = ReighGuestStore(reigh_url, str(reigh_schema_of(reigh_url)), runnable_task_types=known_task_types())
    store.migrate()
    store.check_schema()
    yield store
    store.close()


def reigh_catalog(url: str) -> dict[str, object]:
    """Everything of Reigh's schema that a guest must leave as it found it: columns and their types and
    defaults, relations with their grants and RLS switches, constraints, indexes, triggers (internal ones
    too: a foreign key from elsewhere adds some), policies, functions with their body, grants and settings,
    enum values, the schema's own grants and default privileges, and a digest of every table's rows."""
    schema = schema_of(url)
    queries = {
        "columns": "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
                   "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                   "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                   "WHERE c.relnamespace = %(ns)s::regnamespace AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2",
        "relations": "SELECT relname, relkind, relacl::text, relrowsecurity, relforcerowsecurity FROM pg_class "
                     "WHERE relnamespace = %(ns)s::regnamespace ORDER BY 1",
        "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                       "WHERE connamespace = %(ns)s::regnamespace OR confrelid IN (SELECT oid FROM pg_class "
                       "WHERE relnamespace = %(ns)s::regnamespace) ORDER BY 1, 2",
        "indexes": "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                   "WHERE c.relnamespace = %(ns)s::regnamespace ORDER BY 1",
        "triggers": "SELECT t.tgrelid::regclass::text, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid) FROM pg_trigger t "
                    "JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = %(ns)s::regnamespace ORDER BY 1, 2",
        "policies": "SELECT tablename, policyname, permissive, roles::text, cmd, qual, with_check FROM pg_policies "
                    "WHERE schemaname = %(ns)s ORDER BY 1, 2",
        "functions": "SELECT oid::regprocedure::text, md5(prosrc), proacl::text, proconfig::text, prosecdef "
                     "FROM pg_proc WHERE pronamespace = %(ns)s::regnamespace ORDER BY 1",
        "enums": "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_type t "
                 "JOIN pg_enum e ON e.enumtypid = t.oid WHERE t.typnamespace = %(ns)s::regnamespace GROUP BY 1 ORDER BY 1",
        "schema": "SELECT nspacl::text FROM pg_namespace WHERE nspname = %(ns)s",
        "default_privileges": "SELECT defaclobjtype, defaclacl::text FROM pg_default_acl "
                              "WHERE defaclnamespace = %(ns)s::regnamespace ORDER BY 1, 2",
    }
    with psycopg.connect(url, autocommit=True) as conn:
        found: dict[str, object] = {name: conn.execute(query, {"ns": schema}).fetchall()
                                    for name, query in queries.items()}
        tables = [row[0] for row in conn.execute("SELECT relname FROM pg_class WHERE relkind = 'r' "
                                                 "AND relnamespace = %s::regnamespace ORDER BY 1", (schema,))]
        found["rows"] = {table: conn.execute(
            sql.SQL("SELECT count(*), md5(COALESCE(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} AS t")
            .format(sql.Identifier(schema, table))).fetchone() for table in tables}
    return found
