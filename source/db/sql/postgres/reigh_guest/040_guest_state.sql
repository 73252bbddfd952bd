-- A guest in Reigh's database (docs/reigh.md "Direct mode"). Everything here lives in this worker's own schema
-- (wangp_<Reigh's schema>, first on the guest's search_path): Reigh's tables, columns, grants, policies,
-- triggers, functions and rows are read and used as they are, never altered. No name here is one of Reigh's.
-- What the worker keeps beside Reigh's tasks: its lease, attempts, progress, result, the retry delay, and the
-- orchestrator links, one row per task a guest worker touched (no foreign key: that would add triggers to
-- Reigh's table; housekeeping drops the rows of deleted tasks).
CREATE TABLE task_state (
    task_id uuid PRIMARY KEY,
    worker_id text,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 3,
    shutdown_requeues integer NOT NULL DEFAULT 0,
    lease_expires_at timestamptz,
    heartbeat_at timestamptz,
    retry_at timestamptz,
    progress real,
    progress_phase text,
    result jsonb,
    awaiting_children boolean NOT NULL DEFAULT false,
    parent_task_id uuid,
    child_key text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX task_state_child_idx ON task_state (parent_task_id, child_key) WHERE parent_task_id IS NOT NULL;
CREATE INDEX task_state_lease_idx ON task_state (lease_expires_at) WHERE lease_expires_at IS NOT NULL;

-- One fleet-wide turn per housekeeping job (tasks_housekeeping_turn).
CREATE TABLE housekeeping_turns (
    job text PRIMARY KEY,
    last_at timestamptz NOT NULL,
    worker_id text
);

-- Reigh's task rows in the shape the worker reads (source/db/models.py Task.from_row): its uuid columns as
-- text, dependant_on's first entry (what a chained segment reads its predecessor from; the claim waits for all).
CREATE VIEW task_rows AS
SELECT t.id::text AS id, t.id AS task_uuid, t.task_type, t.params, t.status::text AS status,
       t.dependant_on[1]::text AS dependant_on, t.project_id::text AS project_id, 0 AS priority,
       COALESCE(s.attempts, 0) AS attempts, COALESCE(s.max_attempts, 3) AS max_attempts, t.worker_id,
       t.created_at, t.updated_at, t.generation_started_at, t.generation_processed_at, s.lease_expires_at,
       s.heartbeat_at, s.progress, s.progress_phase, t.output_location, t.error_message, s.result,
       s.parent_task_id::text AS parent_task_id, s.child_key, COALESCE(s.awaiting_children, false) AS awaiting_children
  FROM tasks AS t LEFT JOIN task_state AS s ON s.task_id = t.id;

-- Nothing of the guest's is visible to Reigh's browser roles: no USAGE on this schema, no table rights, and
-- row-level security with no policy on its tables (the service role and the worker's own login only).
ALTER TABLE task_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE housekeeping_turns ENABLE ROW LEVEL SECURITY;
