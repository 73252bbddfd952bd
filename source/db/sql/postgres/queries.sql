-- Statements of the direct Postgres store that are not task verbs (those are SQL functions in the
-- migrations, shared with the Supabase API store): migration bookkeeping and LISTEN.

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: lock_migrations
-- Many workers may start at once; one applies the migrations, the others wait and find them done.
SELECT pg_advisory_xact_lock(hashtext('tasks_migrations:' || current_schema()));

-- name: applied_migrations
SELECT version FROM schema_migrations;

-- name: record_migration
INSERT INTO schema_migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: schema_version
SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations;

-- name: listen
LISTEN tasks_changed;

-- name: current_schema
SELECT current_schema() AS schema;
