-- Ids name output and work folders: a producer writing SQL by hand gets a clear error for an id that is
-- too long, instead of a row that fails later with "File name too long" (the store checks it too).
CREATE TRIGGER IF NOT EXISTS tasks_id_length_insert BEFORE INSERT ON tasks
WHEN length(NEW.id) > 200
BEGIN
    SELECT RAISE(ABORT, 'task id is longer than 200 characters');
END;
CREATE TRIGGER IF NOT EXISTS tasks_id_length_update BEFORE UPDATE OF id ON tasks
WHEN length(NEW.id) > 200
BEGIN
    SELECT RAISE(ABORT, 'task id is longer than 200 characters');
END;

-- How often a worker shutting down gave the row back: past a few, the attempt counts (a row that always
-- hangs until the worker is stopped must not cycle forever).
ALTER TABLE tasks ADD COLUMN shutdown_requeues INTEGER NOT NULL DEFAULT 0;
