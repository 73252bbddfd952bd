-- Retries worth doing: a row that failed for a transient reason (network, storage, a hub 5xx) goes back to
-- Queued with run_after = now() + an exponential backoff with jitter (computed by the worker), up to its
-- max_attempts; the claim skips rows not yet due (the run_after column and that condition are in 007's claim).

CREATE OR REPLACE FUNCTION retry_later(
    p_task_id text, p_worker_id text, p_error_message text, p_delay_seconds double precision)
RETURNS TABLE (status text, run_after timestamptz) LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    UPDATE tasks AS t
    SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'Failed' ELSE 'Queued' END::tasks_status_t,
        worker_id = CASE WHEN t.attempts >= t.max_attempts THEN t.worker_id END,
        run_after = CASE WHEN t.attempts < t.max_attempts THEN now() + make_interval(secs => p_delay_seconds) END,
        error_message = CASE WHEN t.attempts >= t.max_attempts
                             THEN 'gave up after ' || t.attempts || ' attempts: ' || p_error_message
                             ELSE p_error_message END,
        lease_expires_at = NULL, heartbeat_at = NULL, progress = NULL,
        generation_processed_at = CASE WHEN t.attempts >= t.max_attempts THEN now() END,
        updated_at = now()
    WHERE t.id = p_task_id::tasks_id_t AND t.worker_id = p_worker_id AND t.status = 'In Progress'
    RETURNING t.status::text, t.run_after;
$$;

CREATE OR REPLACE FUNCTION user_retry_later(
    p_token text, p_task_id text, p_worker_id text, p_error_message text, p_delay_seconds double precision)
RETURNS TABLE (status text, run_after timestamptz) LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path FROM CURRENT AS $$
BEGIN
    IF tasks_token_task(p_token, p_task_id) THEN
        RETURN QUERY SELECT * FROM retry_later(p_task_id, p_worker_id, p_error_message, p_delay_seconds);
    END IF;
END
$$;


CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 22;
$$;
