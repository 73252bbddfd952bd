-- Retries worth doing: a row that failed for a transient reason (network, storage, a hub 5xx) goes back to
-- Queued with run_after = now() + an exponential backoff with jitter (computed by the worker), up to its
-- max_attempts; the claim skips rows not yet due.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS run_after timestamptz NULL;
CREATE INDEX IF NOT EXISTS tasks_run_after_idx ON tasks (run_after) WHERE status = 'Queued' AND run_after IS NOT NULL;

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

CREATE OR REPLACE FUNCTION has_claimable_task() RETURNS boolean
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'Queued' AND NOT blocked_by_dependency
                                            AND (run_after IS NULL OR run_after <= now()));
$$;

-- The claim of 007 (same signature) with one more condition in each of its three row searches:
-- not before run_after.
CREATE OR REPLACE FUNCTION claim_next_task(
    p_worker_id text, p_lease_seconds double precision DEFAULT 60, p_resident_model text DEFAULT NULL,
    p_resident_task_types text[] DEFAULT '{}'::text[], p_affinity_window_seconds double precision DEFAULT 120,
    p_project_ids text[] DEFAULT NULL)
RETURNS SETOF tasks LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    -- for this transaction only (a SET clause on the function would end before the commit)
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH head AS MATERIALIZED (
        SELECT t.id, t.priority, t.created_at
        FROM tasks AS t
        WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency
          AND (t.run_after IS NULL OR t.run_after <= now())
          AND (p_project_ids IS NULL OR t.project_id::text = ANY (p_project_ids))
        ORDER BY t.priority DESC, t.created_at, t.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ),
    affine_head AS MATERIALIZED (
        SELECT head.priority FROM head
        WHERE p_resident_model IS NOT NULL
          AND head.created_at > now() - make_interval(secs => p_affinity_window_seconds)
    ),
    affine AS MATERIALIZED (
        SELECT c.id, c.created_at
        FROM affine_head AS h,
        LATERAL (SELECT t.id, t.created_at FROM tasks AS t
                 WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency
          AND (t.run_after IS NULL OR t.run_after <= now()) AND t.priority = h.priority
                   AND (p_project_ids IS NULL OR t.project_id::text = ANY (p_project_ids))
                   AND (t.params ->> 'model') = p_resident_model
                 ORDER BY t.created_at, t.id
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED) AS c
        UNION ALL
        SELECT c.id, c.created_at
        FROM affine_head AS h, unnest(p_resident_task_types) AS rt(task_type),
        LATERAL (SELECT t.id, t.created_at FROM tasks AS t
                 WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency
          AND (t.run_after IS NULL OR t.run_after <= now()) AND t.priority = h.priority
                   AND (p_project_ids IS NULL OR t.project_id::text = ANY (p_project_ids))
                   AND (t.params ->> 'model') IS NULL AND t.task_type = rt.task_type
                 ORDER BY t.created_at, t.id
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED) AS c
    ),
    pick AS (
        SELECT COALESCE((SELECT a.id FROM affine AS a ORDER BY a.created_at, a.id LIMIT 1),
                        (SELECT head.id FROM head)) AS id
    )
    UPDATE tasks
    SET status = 'In Progress',
        worker_id = p_worker_id,
        attempts = tasks.attempts + 1,
        lease_expires_at = now() + make_interval(secs => p_lease_seconds),
        heartbeat_at = now(),
        claimed_at = now(),
        generation_started_at = now(),
        generation_processed_at = NULL,
        progress = 0,
        error_message = NULL,
        updated_at = now()
    FROM pick
    WHERE tasks.id = pick.id AND tasks.status = 'Queued'
    RETURNING tasks.*;
END
$$;

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 22;
$$;
