-- Columns for leases, retries, priorities, progress and structured results, and the indexes the
-- claim walks. blocked_by_dependency is maintained by triggers (004) so that a claim never has to
-- step over rows waiting on an unfinished dependency: claim cost stays flat however long the chains.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS worker_id text NULL;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS claimed_at timestamptz NULL;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS priority integer NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS max_attempts integer NOT NULL DEFAULT 3;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz NULL;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS heartbeat_at timestamptz NULL;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS progress double precision NULL;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS error_message text NULL;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS result jsonb NULL;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS blocked_by_dependency boolean NOT NULL DEFAULT false;

-- Old rows: the older worker wrote error text into output_location; keep it and also where we read errors.
UPDATE tasks SET error_message = output_location WHERE status = 'Failed' AND error_message IS NULL;
UPDATE tasks AS t SET blocked_by_dependency = true
WHERE t.dependant_on IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM tasks AS d WHERE d.id = t.dependant_on AND d.status = 'Complete');

-- NOT VALID: a legacy table may hold odd rows; every new or changed row is checked.
ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('Queued', 'In Progress', 'Complete', 'Failed', 'Cancelled')) NOT VALID;

-- The claim: the head of the ready queue, then (affinity) the oldest ready row of one model or task type.
CREATE INDEX IF NOT EXISTS tasks_ready_idx ON tasks (priority DESC, created_at, id)
    WHERE status = 'Queued' AND NOT blocked_by_dependency;
CREATE INDEX IF NOT EXISTS tasks_ready_model_idx ON tasks (priority, (params ->> 'model'), created_at, id)
    WHERE status = 'Queued' AND NOT blocked_by_dependency;
CREATE INDEX IF NOT EXISTS tasks_ready_type_idx ON tasks (priority, task_type, created_at, id)
    WHERE status = 'Queued' AND NOT blocked_by_dependency AND (params ->> 'model') IS NULL;
CREATE INDEX IF NOT EXISTS tasks_blocked_idx ON tasks (dependant_on)
    WHERE status = 'Queued' AND blocked_by_dependency;
CREATE INDEX IF NOT EXISTS tasks_dependant_on_idx ON tasks (dependant_on);
CREATE INDEX IF NOT EXISTS tasks_lease_idx ON tasks (lease_expires_at) WHERE status = 'In Progress';
CREATE INDEX IF NOT EXISTS tasks_created_idx ON tasks (created_at DESC);
-- API mode has no LISTEN: idle workers poll max(updated_at) (tasks_change_marker), one index probe.
CREATE INDEX IF NOT EXISTS tasks_updated_idx ON tasks (updated_at);

-- Orchestrated workflows: children know their parent; a parent waiting on its children is parked
-- (In Progress, no lease, never reclaimed).
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS parent_task_id text NULL;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS child_key text NULL;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS awaiting_children boolean NOT NULL DEFAULT false;
-- Re-running an orchestrator after a crash inserts no duplicate children.
CREATE UNIQUE INDEX IF NOT EXISTS tasks_parent_child_key_idx ON tasks (parent_task_id, child_key)
    WHERE parent_task_id IS NOT NULL;
