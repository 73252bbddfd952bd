-- The table as the older headless WanGP worker created it. A db file written by that worker
-- already has it; on a new file this creates it, so both go through the same later migrations.
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    task_type TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'Queued',
    dependant_on TEXT NULL,
    output_location TEXT NULL,
    created_at TEXT NULL,
    updated_at TEXT NULL,
    generation_started_at TEXT NULL,
    generation_processed_at TEXT NULL,
    project_id TEXT NULL
);
