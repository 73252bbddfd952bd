-- Statements of the direct Postgres store that are not task verbs (those are SQL functions in the
-- migrations, shared with the Supabase API store): migration bookkeeping and LISTEN.

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: lock_migrations
-- Two `--migrate-only` runs at once: one applies the migrations, the other waits and finds them done.
-- A session lock: each migration commits on its own (an enum value added by one is usable by the next).
SELECT pg_advisory_lock(hashtext('tasks_migrations:' || current_schema()));

-- name: apply_security
-- After every migration run: grants and row-level security cover whatever the migrations added (006).
DO $$
BEGIN
    IF to_regprocedure('tasks_apply_security()') IS NOT NULL THEN
        PERFORM tasks_apply_security();
    END IF;
END
$$;

-- name: unlock_migrations
SELECT pg_advisory_unlock(hashtext('tasks_migrations:' || current_schema()));

-- name: schema_tables
-- What a read-only command checks before it runs: never DDL, only whether the tables are there.
SELECT to_regclass('tasks') IS NOT NULL AS has_tasks,
       to_regclass('schema_migrations') IS NOT NULL AS has_migrations,
       to_regprocedure('tasks_schema_version()') IS NOT NULL AS has_version_function;

-- name: reigh_database
-- Reigh's database (banodoco/reigh-app): task_types with a run_type and Reigh's own workers table. This
-- worker only joins it as a guest (source/db/reigh_guest.py), never with the migrations of this folder.
SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('task_types') AND attname = 'run_type'
                  AND NOT attisdropped)
   AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('workers') AND attname = 'instance_type'
                  AND NOT attisdropped) AS reigh;

-- name: function_schema_version
-- Migrations applied by hand or with `supabase db push` leave no schema_migrations rows; the version the
-- functions report (each migration bumps it) stands for them.
SELECT tasks_schema_version() AS version;

-- name: applied_migrations
SELECT version FROM schema_migrations;

-- name: record_migration
INSERT INTO schema_migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: schema_version
SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations;

-- name: current_schema
SELECT current_schema() AS schema;
