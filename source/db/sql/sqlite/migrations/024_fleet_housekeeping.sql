-- A row claimed again starts without the previous attempt's phase: whatever moves it back to Queued or on to
-- In Progress (the claim, an expired lease, a shutdown requeue, a retry, a producer's own UPDATE) clears
-- progress_phase. A Failed or Complete row keeps its last phase: where it stopped.
CREATE TRIGGER IF NOT EXISTS tasks_reset_progress_phase AFTER UPDATE OF status ON tasks
WHEN NEW.progress_phase IS NOT NULL AND OLD.status IS NOT NEW.status AND NEW.status IN ('Queued', 'In Progress')
BEGIN
    UPDATE tasks SET progress_phase = NULL WHERE rowid = NEW.rowid;
END;

-- Housekeeping once per interval for every worker on this file together: the worker that gets the turn
-- (queries.sql housekeeping_turn) does the job. last_run_at: Unix seconds.
CREATE TABLE IF NOT EXISTS tasks_housekeeping (
    job TEXT PRIMARY KEY,
    last_run_at REAL NOT NULL,
    last_worker_id TEXT NULL
);
