-- Columns for leases, retries, priorities, progress and structured results.
ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN worker_id TEXT NULL;
ALTER TABLE tasks ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 3;
ALTER TABLE tasks ADD COLUMN lease_expires_at TEXT NULL;
ALTER TABLE tasks ADD COLUMN heartbeat_at TEXT NULL;
ALTER TABLE tasks ADD COLUMN progress REAL NULL;
ALTER TABLE tasks ADD COLUMN error_message TEXT NULL;
ALTER TABLE tasks ADD COLUMN result TEXT NULL;

-- Old rows: one timestamp format (ISO-8601 UTC, millisecond precision) so text order is time order.
UPDATE tasks SET created_at = COALESCE(strftime('%Y-%m-%dT%H:%M:%fZ', created_at), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
WHERE created_at IS NULL OR created_at NOT LIKE '____-__-__T__:__:__.___Z';
UPDATE tasks SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', updated_at)
WHERE updated_at IS NOT NULL AND updated_at NOT LIKE '____-__-__T__:__:__.___Z';
-- The older worker wrote error text into output_location; keep it there and also where we read errors.
UPDATE tasks SET error_message = output_location WHERE status = 'Failed' AND error_message IS NULL;

CREATE INDEX IF NOT EXISTS tasks_queued_order_idx ON tasks (status, priority DESC, created_at);
CREATE INDEX IF NOT EXISTS tasks_dependant_on_idx ON tasks (dependant_on);
CREATE INDEX IF NOT EXISTS tasks_lease_idx ON tasks (status, lease_expires_at);

-- Producers inserting with plain SQL may leave out id and timestamps: fill them as a uuid4 and now.
CREATE TRIGGER IF NOT EXISTS tasks_fill_defaults AFTER INSERT ON tasks
WHEN NEW.id IS NULL OR NEW.created_at IS NULL OR NEW.created_at NOT LIKE '____-__-__T__:__:__.___Z' OR NEW.updated_at IS NULL
BEGIN
    UPDATE tasks SET
        id = COALESCE(NEW.id, lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4'
             || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1)
             || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
        created_at = COALESCE(strftime('%Y-%m-%dT%H:%M:%fZ', NEW.created_at), strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        updated_at = COALESCE(NEW.updated_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    WHERE rowid = NEW.rowid;
END;
