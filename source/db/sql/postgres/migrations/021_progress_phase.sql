-- What a running task is doing now (downloading, loading, denoising, decoding, encoding, uploading), written
-- by the same heartbeat statement as the progress (one statement per beat); shown by tasks list/show.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS progress_phase text NULL;

-- The old signature goes: with a defaulted p_phase beside it, a four-argument call would be ambiguous.
DROP FUNCTION IF EXISTS heartbeat_task(text, text, double precision, double precision);
CREATE OR REPLACE FUNCTION heartbeat_task(
    p_task_id text, p_worker_id text, p_lease_seconds double precision, p_progress double precision DEFAULT NULL,
    p_phase text DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    SELECT set_config('synchronous_commit', 'off', true);
    WITH changed AS (
        UPDATE tasks
        SET lease_expires_at = now() + make_interval(secs => p_lease_seconds),
            heartbeat_at = now(),
            progress = COALESCE(p_progress, progress),
            progress_phase = COALESCE(p_phase, progress_phase)
        WHERE id = p_task_id::tasks_id_t AND worker_id = p_worker_id AND status = 'In Progress'
        RETURNING 1
    )
    SELECT count(*) > 0 FROM changed;
$$;

DROP FUNCTION IF EXISTS user_heartbeat_task(text, text, text, double precision, double precision);
CREATE OR REPLACE FUNCTION user_heartbeat_task(
    p_token text, p_task_id text, p_worker_id text, p_lease_seconds double precision,
    p_progress double precision DEFAULT NULL, p_phase text DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_task(p_token, p_task_id)
                THEN heartbeat_task(p_task_id, p_worker_id, p_lease_seconds, p_progress, p_phase) ELSE false END;
$$;

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 21;
$$;
