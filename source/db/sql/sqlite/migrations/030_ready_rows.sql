-- The claim reads only rows that are ready now (benchmarks/claim_flat.py): 20,000 rows blocked on an unfinished
-- dependency made a claim 12.8 ms inside the write lock (62 ms at 100,000), each probed for its dependency in
-- turn. blocked_by_dependency is kept by triggers (as Postgres's 004), rows in retry back-off keep run_after set
-- until the claim releases them (release_due_rows), and the ready_tasks view is the one place saying which rows
-- a claim may take; the claim's partial indexes hold exactly those rows.
-- A dependency counts only when the row may link to it (docs/security.md): same project, or a row without one.
ALTER TABLE tasks ADD COLUMN blocked_by_dependency INTEGER NOT NULL DEFAULT 0;

UPDATE tasks SET blocked_by_dependency = 1
WHERE dependant_on IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM tasks AS d WHERE d.id = tasks.dependant_on AND d.status = 'Complete'
                  AND (tasks.project_id IS NULL OR d.project_id = tasks.project_id));

CREATE TRIGGER IF NOT EXISTS tasks_block_on_insert AFTER INSERT ON tasks WHEN NEW.dependant_on IS NOT NULL
BEGIN
    UPDATE tasks SET blocked_by_dependency = NOT EXISTS (
        SELECT 1 FROM tasks AS d WHERE d.id = NEW.dependant_on AND d.status = 'Complete'
        AND (NEW.project_id IS NULL OR d.project_id = NEW.project_id))
    WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER IF NOT EXISTS tasks_block_on_link AFTER UPDATE OF dependant_on, project_id ON tasks
BEGIN
    UPDATE tasks SET blocked_by_dependency = NEW.dependant_on IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM tasks AS d WHERE d.id = NEW.dependant_on AND d.status = 'Complete'
        AND (NEW.project_id IS NULL OR d.project_id = NEW.project_id))
    WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER IF NOT EXISTS tasks_unblock_on_complete AFTER UPDATE OF status ON tasks
WHEN NEW.status = 'Complete' AND OLD.status IS NOT 'Complete'
BEGIN
    UPDATE tasks SET blocked_by_dependency = 0
    WHERE dependant_on = NEW.id AND blocked_by_dependency = 1 AND (project_id IS NULL OR project_id = NEW.project_id);
END;

CREATE VIEW IF NOT EXISTS ready_tasks AS
SELECT rowid AS row_id, * FROM tasks WHERE status = 'Queued' AND blocked_by_dependency = 0 AND run_after IS NULL;

-- status leads every index, as in the indexes the planner would otherwise prefer (tasks_queued_order_idx,
-- tasks_lease_idx), so that these, which hold only ready rows, win the choice.
DROP INDEX IF EXISTS tasks_queued_model_idx;
DROP INDEX IF EXISTS tasks_queued_type_named_idx;
DROP INDEX IF EXISTS tasks_queued_type_modelless_idx;
CREATE INDEX tasks_ready_order_idx ON tasks (status, priority DESC, created_at)
    WHERE status = 'Queued' AND blocked_by_dependency = 0 AND run_after IS NULL;
CREATE INDEX tasks_queued_model_idx
    ON tasks (status, CASE WHEN json_valid(params) THEN json_extract(params, '$.model') END, priority DESC, created_at)
    WHERE status = 'Queued' AND blocked_by_dependency = 0 AND run_after IS NULL
      AND CASE WHEN json_valid(params) THEN json_extract(params, '$.model') END IS NOT NULL;
CREATE INDEX tasks_queued_type_named_idx ON tasks (status, task_type, priority DESC, created_at)
    WHERE status = 'Queued' AND blocked_by_dependency = 0 AND run_after IS NULL
      AND CASE WHEN json_valid(params) THEN json_extract(params, '$.model') END IS NOT NULL;
CREATE INDEX tasks_queued_type_modelless_idx ON tasks (status, task_type, priority DESC, created_at)
    WHERE status = 'Queued' AND blocked_by_dependency = 0 AND run_after IS NULL
      AND CASE WHEN json_valid(params) THEN json_extract(params, '$.model') END IS NULL;
