-- Retry with backoff: a row requeued after a transient failure is not claimable before run_after.
ALTER TABLE tasks ADD COLUMN run_after TEXT NULL;
CREATE INDEX IF NOT EXISTS tasks_run_after_idx ON tasks (run_after) WHERE run_after IS NOT NULL;
