-- Older-worker compatibility.
-- --legacy-output-location on Postgres/Supabase: frontends written for the older worker read a failed row's
-- error text from output_location, so fail_task may write it there too (p_output_location; NULL keeps the
-- column as it is, which is what every other caller passes).

-- The old signatures go: with a defaulted p_output_location beside them, a four-argument call would be
-- ambiguous. Grants follow by name (tasks_apply_security() runs after every migration run).
DROP FUNCTION IF EXISTS fail_task(text, text, text, jsonb);
CREATE OR REPLACE FUNCTION fail_task(
    p_task_id text, p_worker_id text, p_error_message text, p_result jsonb DEFAULT NULL,
    p_output_location text DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH changed AS (
        UPDATE tasks
        SET status = 'Failed', error_message = p_error_message, result = COALESCE(p_result, result),
            output_location = COALESCE(p_output_location, output_location),
            lease_expires_at = NULL, generation_processed_at = now(), updated_at = now()
        WHERE id = p_task_id::tasks_id_t AND worker_id = p_worker_id AND status = 'In Progress'
        RETURNING 1
    )
    SELECT count(*) > 0 FROM changed;
$$;

DROP FUNCTION IF EXISTS user_fail_task(text, text, text, text, jsonb);
CREATE OR REPLACE FUNCTION user_fail_task(
    p_token text, p_task_id text, p_worker_id text, p_error_message text, p_result jsonb DEFAULT NULL,
    p_output_location text DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_task(p_token, p_task_id)
                THEN fail_task(p_task_id, p_worker_id, p_error_message, p_result, p_output_location)
                ELSE false END;
$$;

-- The same for a row whose transient failures used up its attempts (p_error_in_output_location).
DROP FUNCTION IF EXISTS retry_later(text, text, text, double precision);
CREATE OR REPLACE FUNCTION retry_later(
    p_task_id text, p_worker_id text, p_error_message text, p_delay_seconds double precision,
    p_error_in_output_location boolean DEFAULT false)
RETURNS TABLE (status text, run_after timestamptz) LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    UPDATE tasks AS t
    SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'Failed' ELSE 'Queued' END::tasks_status_t,
        worker_id = CASE WHEN t.attempts >= t.max_attempts THEN t.worker_id END,
        run_after = CASE WHEN t.attempts < t.max_attempts THEN now() + make_interval(secs => p_delay_seconds) END,
        error_message = CASE WHEN t.attempts >= t.max_attempts
                             THEN 'gave up after ' || t.attempts || ' attempts: ' || p_error_message
                             ELSE p_error_message END,
        output_location = CASE WHEN t.attempts >= t.max_attempts AND p_error_in_output_location
                               THEN 'gave up after ' || t.attempts || ' attempts: ' || p_error_message
                               ELSE t.output_location END,
        lease_expires_at = NULL, heartbeat_at = NULL, progress = NULL,
        generation_processed_at = CASE WHEN t.attempts >= t.max_attempts THEN now() END,
        updated_at = now()
    WHERE t.id = p_task_id::tasks_id_t AND t.worker_id = p_worker_id AND t.status = 'In Progress'
    RETURNING t.status::text, t.run_after;
$$;

DROP FUNCTION IF EXISTS user_retry_later(text, text, text, text, double precision);
CREATE OR REPLACE FUNCTION user_retry_later(
    p_token text, p_task_id text, p_worker_id text, p_error_message text, p_delay_seconds double precision,
    p_error_in_output_location boolean DEFAULT false)
RETURNS TABLE (status text, run_after timestamptz) LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path FROM CURRENT AS $$
BEGIN
    IF tasks_token_task(p_token, p_task_id) THEN
        RETURN QUERY SELECT * FROM retry_later(p_task_id, p_worker_id, p_error_message, p_delay_seconds,
                                               p_error_in_output_location);
    END IF;
END
$$;

-- An older worker's orchestrator row waits In Progress, without a lease, for its older final child
-- (travel_stitch / dp_final_gen, naming it in its params) to complete it (older_shapes.py): the reclaim of
-- lease-less rows leaves it alone until that child has ended, instead of running the whole workflow again.
CREATE OR REPLACE FUNCTION reclaim_expired_leases()
RETURNS TABLE (id text, status text, attempts integer)
LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH expired AS (
        SELECT t.id FROM tasks AS t
        WHERE t.status = 'In Progress' AND NOT t.awaiting_children
          AND (t.lease_expires_at IS NULL OR t.lease_expires_at < now())
          AND NOT (t.lease_expires_at IS NULL
                   AND t.task_type IN ('travel_orchestrator', 'different_perspective_orchestrator')
                   AND EXISTS (SELECT 1 FROM tasks AS c
                               WHERE c.status IN ('Queued', 'In Progress') AND c.parent_task_id IS NULL
                                 AND c.task_type IN ('travel_stitch', 'dp_final_gen')
                                 AND strpos(c.params::text, t.id::text) > 0))
        FOR UPDATE OF t SKIP LOCKED
    )
    UPDATE tasks AS t
    SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'Failed' ELSE 'Queued' END::tasks_status_t,
        error_message = CASE WHEN t.attempts >= t.max_attempts
            THEN 'lease expired after ' || t.attempts || ' attempts (last worker: '
                 || COALESCE(t.worker_id, 'unknown') || ')'
            ELSE t.error_message END,
        worker_id = CASE WHEN t.attempts >= t.max_attempts THEN t.worker_id ELSE NULL END,
        lease_expires_at = NULL,
        updated_at = now()
    FROM expired
    WHERE t.id = expired.id
    RETURNING t.id::text, t.status::text, t.attempts;
$$;

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 24;
$$;
