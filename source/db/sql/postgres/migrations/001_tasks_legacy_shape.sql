-- The table as the older headless WanGP worker created it on Supabase. A project that already has it
-- keeps it; a new one gets it here, and both go through the same later migrations.
-- Functions below pin their search_path to the one in force when this runs (SET search_path FROM
-- CURRENT): run migrations with the target schema first on the search_path (Supabase: public).
CREATE TABLE IF NOT EXISTS tasks (
    id text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    task_type text NOT NULL,
    params jsonb NOT NULL DEFAULT '{}'::jsonb,
    status text NOT NULL DEFAULT 'Queued',
    dependant_on text NULL,
    output_location text NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NULL DEFAULT clock_timestamp(),
    generation_started_at timestamptz NULL,
    generation_processed_at timestamptz NULL,
    project_id text NULL,
    worker_id text NULL,
    claimed_at timestamptz NULL
);
