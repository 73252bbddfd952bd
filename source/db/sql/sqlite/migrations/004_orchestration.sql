-- Orchestrated workflows: child rows know their parent, and a parent waiting on its children is parked.
-- parent_task_id + child_key: re-running an orchestrator after a crash inserts no duplicate children.
ALTER TABLE tasks ADD COLUMN parent_task_id TEXT NULL;
ALTER TABLE tasks ADD COLUMN child_key TEXT NULL;
-- 1 = an In Progress orchestrator whose children will finish it: no lease, and never reclaimed.
ALTER TABLE tasks ADD COLUMN awaiting_children INTEGER NOT NULL DEFAULT 0;

CREATE UNIQUE INDEX IF NOT EXISTS tasks_parent_child_key_idx ON tasks (parent_task_id, child_key)
WHERE parent_task_id IS NOT NULL;
