-- A row claimed again starts without the previous attempt's phase. Every way back to Queued or on to
-- In Progress (the claim, an expired lease, a shutdown requeue, a retry, a producer's own UPDATE) changes
-- the status, so one trigger on the status clears progress_phase, and no verb's body repeats it (the claim
-- already restarts progress at 0). A Failed or Complete row keeps its last phase: where it stopped.
CREATE OR REPLACE FUNCTION tasks_reset_progress_phase() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    NEW.progress_phase := NULL;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS tasks_reset_progress_phase ON tasks;
CREATE TRIGGER tasks_reset_progress_phase BEFORE UPDATE OF status ON tasks
    FOR EACH ROW WHEN (NEW.progress_phase IS NOT NULL AND OLD.status IS DISTINCT FROM NEW.status
                       AND NEW.status IN ('Queued', 'In Progress'))
    EXECUTE FUNCTION tasks_reset_progress_phase();

-- New functions join the worker functions' grants (006's list, extended here rather than repeated).
DO $$
BEGIN
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION tasks_worker_functions() RETURNS text[]
        LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $b$ SELECT %L::text[] $b$ $f$,
        ARRAY(SELECT DISTINCT unnest(tasks_worker_functions() || ARRAY['tasks_reset_progress_phase'])));
END
$$;

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 25;
$$;
