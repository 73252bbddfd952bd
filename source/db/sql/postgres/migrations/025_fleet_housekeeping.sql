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

-- Token workers join the wake-one idle set (011): register, leave, poll the wake marker, and on a direct
-- connection LISTEN on their own channel (LISTEN needs no rights). Each checks the token first. Whether a
-- row is claimable is answered for the token's projects only; the dispatcher does not know whose worker
-- it picks, so a token worker woken for another user's row claims nothing and that row waits for another
-- worker's idle renewal (at most its poll interval), as when a chosen worker has died.
-- (with the capability lists of 023: the dispatcher wakes a token worker only for rows it can run)
CREATE OR REPLACE FUNCTION user_worker_idle(
    p_token text, p_worker_id text, p_resident_model text DEFAULT NULL, p_poll_seconds double precision DEFAULT 10,
    p_task_types text[] DEFAULT NULL, p_models text[] DEFAULT NULL, p_modelless_task_types text[] DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM tasks_token_user(p_token);  -- an invalid token stops here, before any change
    PERFORM worker_idle(p_worker_id, p_resident_model, p_poll_seconds, p_task_types, p_models,
                        p_modelless_task_types);
    -- its own statement, so its snapshot is taken after worker_idle's dispatch lock (no lost wake-up)
    RETURN user_has_claimable_task(p_token, p_task_types, p_models, p_modelless_task_types);
END
$$;

CREATE OR REPLACE FUNCTION user_worker_busy(p_token text, p_worker_id text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_user(p_token) IS NOT NULL THEN worker_busy(p_worker_id) END;
$$;

CREATE OR REPLACE FUNCTION user_worker_woken(p_token text, p_worker_id text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_user(p_token) IS NOT NULL THEN worker_woken(p_worker_id) END;
$$;

CREATE OR REPLACE FUNCTION user_tasks_worker_channel(p_token text, p_worker_id text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_user(p_token) IS NOT NULL THEN tasks_worker_channel(p_worker_id) END;
$$;

-- Housekeeping (putting expired leases back, the failure cascade, the unrunnable-row sweep) once per
-- interval for the whole fleet instead of once per interval per idle worker: a worker does a job only when
-- tasks_housekeeping_turn gives it the turn, which one worker gets per interval. A call that is not due
-- reads one row and locks nothing; when it is due, the callers meet on that row's lock and the first one
-- takes the turn (the others re-read its new last_run_at and are told no).
CREATE TABLE IF NOT EXISTS tasks_housekeeping (
    job text PRIMARY KEY,
    last_run_at timestamptz NOT NULL,
    last_worker_id text NULL
);

DO $$
BEGIN
    IF tasks_supabase_roles_exist() THEN  -- as 006 does for our other tables
        ALTER TABLE tasks_housekeeping ENABLE ROW LEVEL SECURITY;
        REVOKE ALL ON TABLE tasks_housekeeping FROM PUBLIC, anon, authenticated;
        GRANT ALL ON TABLE tasks_housekeeping TO service_role;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION tasks_housekeeping_turn(
    p_job text, p_interval_seconds double precision, p_worker_id text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE tasks_housekeeping AS h SET last_run_at = now(), last_worker_id = p_worker_id
    WHERE h.job = p_job AND h.last_run_at <= now() - make_interval(secs => p_interval_seconds);
    IF FOUND THEN
        RETURN true;
    END IF;
    IF EXISTS (SELECT 1 FROM tasks_housekeeping AS h WHERE h.job = p_job) THEN
        RETURN false;
    END IF;
    INSERT INTO tasks_housekeeping (job, last_run_at, last_worker_id) VALUES (p_job, now(), p_worker_id)
    ON CONFLICT (job) DO NOTHING;
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION user_tasks_housekeeping_turn(
    p_token text, p_job text, p_interval_seconds double precision, p_worker_id text DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_user(p_token) IS NOT NULL
                THEN tasks_housekeeping_turn(p_job, p_interval_seconds, p_worker_id) END;
$$;

-- New functions join the worker functions' grants (006's list, extended here rather than repeated).
SELECT tasks_add_worker_functions(ARRAY['tasks_reset_progress_phase', 'tasks_housekeeping_turn']);

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 25;
$$;
