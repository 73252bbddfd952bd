-- Capabilities in the claim (issue 18): a worker may claim only rows whose task type and params.model it can
-- run. The claim then takes the first ready row of each allowed model and of each allowed model-less task
-- type, one index probe each, so its cost does not grow with queued rows that worker cannot run.
-- The model expression must be spelt exactly as in queries.sql (pick_capable_task) for the index to be used;
-- json_valid first: a row with broken params must still be insertable and claimable (then failed).
CREATE INDEX IF NOT EXISTS tasks_queued_model_idx
    ON tasks (CASE WHEN json_valid(params) THEN json_extract(params, '$.model') END, priority DESC, created_at)
    WHERE status = 'Queued' AND CASE WHEN json_valid(params) THEN json_extract(params, '$.model') END IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_queued_type_named_idx ON tasks (task_type, priority DESC, created_at)
    WHERE status = 'Queued' AND CASE WHEN json_valid(params) THEN json_extract(params, '$.model') END IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_queued_type_modelless_idx ON tasks (task_type, priority DESC, created_at)
    WHERE status = 'Queued' AND CASE WHEN json_valid(params) THEN json_extract(params, '$.model') END IS NULL;
-- What each worker may run (Capabilities.as_json), for `tasks stats` / `tasks list --stuck`.
ALTER TABLE workers ADD COLUMN capabilities TEXT NULL;
