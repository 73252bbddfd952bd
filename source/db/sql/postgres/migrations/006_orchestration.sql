-- Orchestrated workflows (same rules as the SQLite store): children know their parent, a parent waiting
-- on its children is parked (In Progress, no lease, never reclaimed), a child ending Failed/Cancelled
-- fails its parent, a Failed/Cancelled parent cancels its unfinished children. Workers also publish
-- their generation queue's counters.

ALTER TABLE tasks ADD COLUMN IF NOT EXISTS parent_task_id text NULL;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS child_key text NULL;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS awaiting_children boolean NOT NULL DEFAULT false;
-- Re-running an orchestrator after a crash inserts no duplicate children.
CREATE UNIQUE INDEX IF NOT EXISTS tasks_parent_child_key_idx ON tasks (parent_task_id, child_key)
    WHERE parent_task_id IS NOT NULL;

ALTER TABLE workers ADD COLUMN IF NOT EXISTS stats jsonb NULL;

-- p_children: {"children": [{"id", "child_key", "task_type", "params", "dependant_on", "project_id",
-- "priority", "max_attempts"}, ...]} in chain order; returns the ids of the children, existing ones winning.
-- (Two columns, so every client, PostgREST included, sees rows, never bare scalars.)
CREATE OR REPLACE FUNCTION add_child_tasks(p_parent_task_id text, p_children jsonb)
RETURNS TABLE (id text, child_key text) LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    child jsonb;
BEGIN
    FOR child IN SELECT value FROM jsonb_array_elements(p_children -> 'children') LOOP
        INSERT INTO tasks (id, task_type, params, status, dependant_on, project_id, priority, max_attempts,
                           attempts, parent_task_id, child_key, created_at, updated_at)
        VALUES (child ->> 'id', child ->> 'task_type', COALESCE(child -> 'params', '{}'::jsonb), 'Queued',
                child ->> 'dependant_on', child ->> 'project_id', COALESCE((child ->> 'priority')::integer, 0),
                COALESCE((child ->> 'max_attempts')::integer, 3), 0, p_parent_task_id, child ->> 'child_key',
                clock_timestamp(), clock_timestamp())
        ON CONFLICT DO NOTHING;
    END LOOP;
    RETURN QUERY
    SELECT t.id, t.child_key
    FROM jsonb_array_elements(p_children -> 'children') WITH ORDINALITY AS c(child, n)
    JOIN tasks AS t ON t.parent_task_id = p_parent_task_id AND t.child_key = c.child ->> 'child_key'
    ORDER BY c.n;
END
$$;

CREATE OR REPLACE FUNCTION list_child_tasks(p_parent_task_id text)
RETURNS SETOF tasks LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT * FROM tasks WHERE parent_task_id = p_parent_task_id ORDER BY created_at, id;
$$;

CREATE OR REPLACE FUNCTION park_awaiting_children(p_task_id text, p_worker_id text, p_result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH changed AS (
        UPDATE tasks
        SET awaiting_children = true, result = p_result, lease_expires_at = NULL, heartbeat_at = now(),
            updated_at = now()
        WHERE id = p_task_id AND worker_id = p_worker_id AND status = 'In Progress'
        RETURNING 1
    )
    SELECT count(*) > 0 FROM changed;
$$;

-- Any worker may complete a parent (its last child runs anywhere), only while it is still In Progress;
-- the child's result is merged over what the parent recorded when it parked.
CREATE OR REPLACE FUNCTION complete_parent(p_task_id text, p_output_location text, p_result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH changed AS (
        UPDATE tasks
        SET status = 'Complete', output_location = p_output_location,
            result = (CASE WHEN jsonb_typeof(result) = 'object' THEN result ELSE '{}'::jsonb END)
                     || COALESCE(p_result, '{}'::jsonb),
            progress = 1.0, error_message = NULL, lease_expires_at = NULL, awaiting_children = false,
            generation_processed_at = now(), updated_at = now()
        WHERE id = p_task_id AND status = 'In Progress'
        RETURNING 1
    )
    SELECT count(*) > 0 FROM changed;
$$;

-- One round: In Progress (or parked) parents with a Failed/Cancelled child fail, naming the child that
-- ended first (the cause, not the dependants that failed after it).
CREATE OR REPLACE FUNCTION fail_parents_of_ended_children()
RETURNS TABLE (id text, cause_id text) LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH causes AS (
        SELECT p.id AS parent_id, c.id AS child_id,
               'child ' || c.task_type || ' ' || c.id || ' ended ' || c.status
               || COALESCE(': ' || left(c.error_message, 500), '') AS message
        FROM tasks AS p
        CROSS JOIN LATERAL (
            SELECT c.* FROM tasks AS c
            WHERE c.parent_task_id = p.id AND c.status IN ('Failed', 'Cancelled')
            ORDER BY c.updated_at, c.id LIMIT 1) AS c
        WHERE p.status = 'In Progress'
    )
    UPDATE tasks AS t
    SET status = 'Failed', error_message = causes.message, awaiting_children = false, lease_expires_at = NULL,
        generation_processed_at = now(), updated_at = now()
    FROM causes
    WHERE t.id = causes.parent_id
    RETURNING t.id, causes.child_id;
$$;

-- One round: unfinished children of a Failed/Cancelled parent are cancelled (a running one stops at its
-- next step: its worker sees the Cancelled status).
CREATE OR REPLACE FUNCTION cancel_children_of_ended_parents()
RETURNS TABLE (id text, parent_task_id text) LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    UPDATE tasks AS t
    SET status = 'Cancelled', lease_expires_at = NULL, awaiting_children = false,
        error_message = 'parent ' || p.id || ' ended ' || p.status || COALESCE(': ' || left(p.error_message, 500), ''),
        updated_at = now()
    FROM tasks AS p
    WHERE t.parent_task_id = p.id AND t.status IN ('Queued', 'In Progress') AND p.status IN ('Failed', 'Cancelled')
    RETURNING t.id, t.parent_task_id;
$$;

-- Cancelling a parent cancels its unfinished children (and theirs) in the same transaction.
CREATE OR REPLACE FUNCTION cancel_task(p_task_id text)
RETURNS boolean LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    rounds integer := 0;
BEGIN
    UPDATE tasks
    SET status = 'Cancelled', lease_expires_at = NULL, awaiting_children = false,
        error_message = COALESCE(error_message, 'cancelled by request'), updated_at = now()
    WHERE id = p_task_id AND status IN ('Queued', 'In Progress');
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    LOOP
        PERFORM 1 FROM cancel_children_of_ended_parents();
        EXIT WHEN NOT FOUND;
        rounds := rounds + 1;
        EXIT WHEN rounds >= 1000;
    END LOOP;
    RETURN true;
END
$$;

-- Retrying a parent retries its children that ended Failed/Cancelled (the Complete ones are kept).
CREATE OR REPLACE FUNCTION retry_task(p_task_id text)
RETURNS boolean LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    parents text[];
BEGIN
    UPDATE tasks
    SET status = 'Queued', attempts = 0, worker_id = NULL, lease_expires_at = NULL, heartbeat_at = NULL,
        progress = NULL, error_message = NULL, generation_started_at = NULL, generation_processed_at = NULL,
        awaiting_children = false, updated_at = now()
    WHERE id = p_task_id AND status IN ('Failed', 'Cancelled');
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    parents := ARRAY[p_task_id];
    WHILE cardinality(parents) > 0 LOOP
        WITH retried AS (
            UPDATE tasks
            SET status = 'Queued', attempts = 0, worker_id = NULL, lease_expires_at = NULL, heartbeat_at = NULL,
                progress = NULL, error_message = NULL, generation_started_at = NULL,
                generation_processed_at = NULL, awaiting_children = false, updated_at = now()
            WHERE parent_task_id = ANY (parents) AND status IN ('Failed', 'Cancelled')
            RETURNING id
        )
        SELECT COALESCE(array_agg(retried.id), '{}') INTO parents FROM retried;
    END LOOP;
    RETURN true;
END
$$;

-- A missing lease on an In Progress row means a row left behind by the older worker: reclaim it too,
-- unless it is an orchestrator parked until its children finish it.
CREATE OR REPLACE FUNCTION reclaim_expired_leases()
RETURNS TABLE (id text, status text, attempts integer)
LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH expired AS (
        SELECT t.id FROM tasks AS t
        WHERE t.status = 'In Progress' AND NOT t.awaiting_children
          AND (t.lease_expires_at IS NULL OR t.lease_expires_at < now())
        FOR UPDATE SKIP LOCKED
    )
    UPDATE tasks AS t
    SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'Failed' ELSE 'Queued' END,
        error_message = CASE WHEN t.attempts >= t.max_attempts
            THEN 'lease expired after ' || t.attempts || ' attempts (last worker: '
                 || COALESCE(t.worker_id, 'unknown') || ')'
            ELSE t.error_message END,
        worker_id = CASE WHEN t.attempts >= t.max_attempts THEN t.worker_id ELSE NULL END,
        lease_expires_at = NULL,
        updated_at = now()
    FROM expired
    WHERE t.id = expired.id
    RETURNING t.id, t.status, t.attempts;
$$;

-- The dependency cascade now also runs the parent/child rules each round; ``kind`` says which rule
-- ended the row (dependency, child, parent).
DROP FUNCTION IF EXISTS fail_orphaned_dependants();
CREATE FUNCTION fail_orphaned_dependants()
RETURNS TABLE (id text, dependant_on text, kind text)
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    rounds integer := 0;
    changed boolean;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('tasks_cascade:' || current_schema())) THEN
        RETURN;
    END IF;
    LOOP
        changed := false;
        RETURN QUERY
        WITH orphans AS (
            SELECT c.id,
                   COALESCE(
                       (SELECT 'dependency ' || d.id || ' ended ' || d.status
                               || COALESCE(': ' || left(d.error_message, 500), '')
                        FROM tasks AS d WHERE d.id = c.dependant_on AND d.status IN ('Failed', 'Cancelled')),
                       'dependency ' || c.dependant_on || ' does not exist') AS message
            FROM tasks AS c
            WHERE c.status = 'Queued' AND c.blocked_by_dependency
              AND (EXISTS (SELECT 1 FROM tasks AS d
                           WHERE d.id = c.dependant_on AND d.status IN ('Failed', 'Cancelled'))
                   -- a producer may insert a child a moment before its parent: give the parent a minute
                   OR (NOT EXISTS (SELECT 1 FROM tasks AS d WHERE d.id = c.dependant_on)
                       AND c.created_at < now() - interval '60 seconds'))
            FOR UPDATE OF c SKIP LOCKED
        )
        UPDATE tasks AS t
        SET status = 'Failed', error_message = orphans.message, generation_processed_at = now(),
            updated_at = now()
        FROM orphans
        WHERE t.id = orphans.id
        RETURNING t.id, t.dependant_on, 'dependency'::text;
        changed := changed OR FOUND;
        RETURN QUERY SELECT f.id, f.cause_id, 'child'::text FROM fail_parents_of_ended_children() AS f;
        changed := changed OR FOUND;
        RETURN QUERY SELECT c.id, c.parent_task_id, 'parent'::text FROM cancel_children_of_ended_parents() AS c;
        changed := changed OR FOUND;
        EXIT WHEN NOT changed;
        rounds := rounds + 1;
        EXIT WHEN rounds >= 10000;
    END LOOP;
END
$$;

DROP FUNCTION IF EXISTS touch_worker(text, text, text, text);
CREATE FUNCTION touch_worker(
    p_id text, p_resident_model text DEFAULT NULL, p_current_task_id text DEFAULT NULL,
    p_status text DEFAULT 'running', p_stats jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    SELECT set_config('synchronous_commit', 'off', true);
    UPDATE workers
    SET resident_model = p_resident_model, current_task_id = p_current_task_id, status = p_status,
        stats = COALESCE(p_stats, stats), last_heartbeat = now()
    WHERE id = p_id
    RETURNING true;
$$;

DROP FUNCTION IF EXISTS list_workers(double precision);
CREATE FUNCTION list_workers(p_alive_within_seconds double precision)
RETURNS TABLE (id text, host text, pid integer, gpu_name text, gpu_memory_gb double precision,
               resident_model text, current_task_id text, status text, started_at timestamptz,
               last_heartbeat timestamptz, alive boolean, stats jsonb)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT w.id, w.host, w.pid, w.gpu_name, w.gpu_memory_gb, w.resident_model, w.current_task_id, w.status,
           w.started_at, w.last_heartbeat,
           w.status = 'running' AND w.last_heartbeat >= now() - make_interval(secs => p_alive_within_seconds),
           w.stats
    FROM workers AS w
    ORDER BY w.started_at DESC;
$$;

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 6;
$$;
