-- Rows that can never run, and rows that would run forever. Written for both shapes of the table: ours
-- (text id/dependant_on, text status) and an adopted Supabase one (uuid ids, a task_status enum):
-- columns are compared with columns or string literals only, outputs are cast to text, statuses are
-- assigned as literals.

-- Ids name output and work folders: an over-long id is refused at insert (NOT VALID: rows already in a
-- legacy table are left alone; the claim fails them with the same reason).
ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_id_length;
ALTER TABLE tasks ADD CONSTRAINT tasks_id_length CHECK (char_length(id::text) <= 200) NOT VALID;

-- The claim adds one to attempts: at the integer limit it would raise, and fail every claim behind it.
ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_attempts_range;
ALTER TABLE tasks ADD CONSTRAINT tasks_attempts_range CHECK (attempts < 2147483647) NOT VALID;

-- How often a worker shutting down gave the row back (requeue_task_on_shutdown).
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS shutdown_requeues integer NOT NULL DEFAULT 0;

-- Graceful shutdown gives the row back without counting the attempt, p_free_requeues times; after that
-- each one counts, and a row whose attempts are used up fails instead of cycling forever.
-- id::text: the parameter is text whatever the id column's type (a requeue is rare; no index needed).
CREATE OR REPLACE FUNCTION requeue_task_on_shutdown(p_task_id text, p_worker_id text, p_free_requeues integer DEFAULT 3)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH changed AS (
        UPDATE tasks AS t
        SET status = (CASE WHEN t.shutdown_requeues >= p_free_requeues AND t.attempts >= t.max_attempts
                           THEN 'Failed' ELSE 'Queued' END)::tasks_status_t,
            error_message = CASE WHEN t.shutdown_requeues >= p_free_requeues AND t.attempts >= t.max_attempts
                THEN 'interrupted by a worker shutdown ' || (t.shutdown_requeues + 1) || ' times; '
                     || t.attempts || ' of ' || t.max_attempts || ' attempts used'
                ELSE t.error_message END,
            generation_processed_at = CASE WHEN t.shutdown_requeues >= p_free_requeues
                                            AND t.attempts >= t.max_attempts
                THEN now() ELSE t.generation_processed_at END,
            generation_started_at = CASE WHEN t.shutdown_requeues >= p_free_requeues
                                          AND t.attempts >= t.max_attempts
                THEN t.generation_started_at ELSE NULL END,
            worker_id = CASE WHEN t.shutdown_requeues >= p_free_requeues AND t.attempts >= t.max_attempts
                THEN t.worker_id ELSE NULL END,
            attempts = CASE WHEN t.shutdown_requeues >= p_free_requeues THEN t.attempts
                            ELSE greatest(t.attempts - 1, 0) END,
            shutdown_requeues = t.shutdown_requeues + 1,
            lease_expires_at = NULL, heartbeat_at = NULL, progress = NULL, updated_at = now()
        WHERE t.id::text = p_task_id AND t.worker_id = p_worker_id AND t.status = 'In Progress'
        RETURNING 1
    )
    SELECT count(*) > 0 FROM changed;
$$;

-- The periodic sweep: each row that can never run is failed with its reason. One worker at a time
-- (advisory lock); the others skip, their turn comes at the next sweep.
-- jit off: compiling the recursive query costs more than running it.
CREATE OR REPLACE FUNCTION fail_unrunnable_tasks()
RETURNS TABLE (id text, reason text)
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT SET jit = off AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('tasks_unrunnable:' || current_schema())) THEN
        RETURN;
    END IF;
    -- A status no worker looks for (a legacy row from before the status check, 'queued', ...).
    RETURN QUERY
    UPDATE tasks AS t
    SET status = 'Failed',
        error_message = 'status ' || quote_literal(t.status::text)
                        || ' is not one of Queued, In Progress, Complete, Failed, Cancelled',
        lease_expires_at = NULL, generation_processed_at = now(), updated_at = now()
    WHERE t.status::text NOT IN ('Queued', 'In Progress', 'Complete', 'Failed', 'Cancelled')
    RETURNING t.id::text, t.error_message::text;

    -- attempts at the integer limit (a legacy row from before tasks_attempts_range): a claim would overflow.
    RETURN QUERY
    UPDATE tasks AS t
    SET status = 'Failed', error_message = 'attempts is ' || t.attempts || ', the integer limit: it cannot be claimed',
        generation_processed_at = now(), updated_at = now()
    WHERE t.status = 'Queued' AND t.attempts >= 2147483647
    RETURNING t.id::text, t.error_message::text;

    -- Waiting for children it does not have: nothing would ever finish it (and the lease sweep skips it).
    RETURN QUERY
    UPDATE tasks AS t
    SET status = 'Failed', error_message = 'awaiting children but has none', awaiting_children = false,
        lease_expires_at = NULL, generation_processed_at = now(), updated_at = now()
    WHERE t.status IN ('Queued', 'In Progress') AND t.awaiting_children
      AND NOT EXISTS (SELECT 1 FROM tasks AS c WHERE c.parent_task_id = t.id::text)
    RETURNING t.id::text, t.error_message::text;

    -- Queued rows waiting on Queued rows that, followed link by link, never reach a row that can run:
    -- the members of a cycle fail with the cycle spelled out; the rows behind it then fail by the
    -- cascade (fail_orphaned_dependants: their dependency ended Failed). Only blocked rows are walked.
    RETURN QUERY
    WITH RECURSIVE
    blocked AS MATERIALIZED (
        SELECT b.id, b.dependant_on FROM tasks AS b JOIN tasks AS d ON d.id = b.dependant_on
        WHERE b.status = 'Queued' AND b.blocked_by_dependency AND d.status = 'Queued'
    ),
    -- the dependencies of blocked rows that are not blocked themselves: where the chains can start
    -- (set operations, not anti-joins: a fresh table without statistics must not turn them into nested loops)
    heads AS MATERIALIZED (
        SELECT b.dependant_on AS id FROM blocked AS b
        EXCEPT
        SELECT b.id FROM blocked AS b
    ),
    runnable AS (
        SELECT b.id FROM heads AS h JOIN tasks AS b ON b.dependant_on = h.id
        WHERE b.status = 'Queued' AND b.blocked_by_dependency
        UNION
        -- down the chains through the dependant_on index (one probe per link)
        SELECT b.id FROM runnable AS r JOIN tasks AS b ON b.dependant_on = r.id
        WHERE b.status = 'Queued' AND b.blocked_by_dependency
    ),
    stuck_ids AS MATERIALIZED (
        SELECT b.id FROM blocked AS b
        EXCEPT
        SELECT r.id FROM runnable AS r
    ),
    stuck AS MATERIALIZED (
        SELECT b.id, b.dependant_on FROM blocked AS b JOIN stuck_ids AS s ON s.id = b.id
    ),
    walk AS (
        SELECT s.id AS start, s.dependant_on AS cur, s.id::text AS path, 0 AS steps FROM stuck AS s
        UNION ALL
        SELECT w.start, s.dependant_on, w.path || ' → ' || s.id::text, w.steps + 1
        FROM walk AS w JOIN stuck AS s ON s.id = w.cur
        WHERE w.cur <> w.start AND w.steps < (SELECT count(*) FROM stuck)
    ),
    cycles AS (
        SELECT w.start AS task_id, 'dependency cycle: ' || w.path || ' → ' || w.start::text AS message
        FROM walk AS w WHERE w.cur = w.start
    )
    UPDATE tasks AS t
    SET status = 'Failed', error_message = cycles.message, generation_processed_at = now(), updated_at = now()
    FROM cycles
    WHERE t.id = cycles.task_id AND t.status = 'Queued'
    RETURNING t.id::text, cycles.message::text;
END
$$;

-- A worker holding a personal access token (007) reaches these through user_* wrappers that check the
-- token and keep to that user's rows.
CREATE OR REPLACE FUNCTION user_requeue_task_on_shutdown(
    p_token text, p_task_id text, p_worker_id text, p_free_requeues integer DEFAULT 3)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_task(p_token, p_task_id)
                THEN requeue_task_on_shutdown(p_task_id, p_worker_id, p_free_requeues) ELSE false END;
$$;

-- Housekeeping is global, like user_fail_orphaned_dependants; the caller hears only of its own rows.
CREATE OR REPLACE FUNCTION user_fail_unrunnable_tasks(p_token text)
RETURNS TABLE (id text, reason text)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT tasks_token_user(p_token);  -- an invalid token stops here, before any change
    SELECT f.id, f.reason FROM fail_unrunnable_tasks() AS f WHERE tasks_token_task(p_token, f.id);
$$;

-- The API store checks this before it starts: the schema must be at least what the code expects.
CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 10;
$$;
