-- The task store's verbs as SQL functions: the direct (psycopg) store and the Supabase API store
-- (supabase-py rpc → PostgREST) call the same functions. Each is one transaction; the writers are
-- VOLATILE, every function pins its search_path (Supabase's advisor flags mutable ones).
-- Arguments and results are text whatever the table's own types (uuid ids, a status enum: see 000): ids
-- and statuses are cast to the column's domain (tasks_id_t, tasks_status_t, ...) where they meet a column
-- and back to text where they leave.

CREATE OR REPLACE FUNCTION add_task(
    p_task_type text, p_params jsonb DEFAULT '{}'::jsonb, p_id text DEFAULT NULL,
    p_dependant_on text DEFAULT NULL, p_project_id text DEFAULT NULL, p_priority integer DEFAULT 0,
    p_max_attempts integer DEFAULT 3)
RETURNS text LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    INSERT INTO tasks (id, task_type, params, status, dependant_on, project_id, priority, max_attempts,
                       attempts, created_at, updated_at)
    VALUES (COALESCE(p_id, gen_random_uuid()::text)::tasks_id_t, p_task_type, COALESCE(p_params, '{}'::jsonb),
            'Queued', p_dependant_on::tasks_dependant_on_t, p_project_id::tasks_project_id_t, p_priority,
            p_max_attempts, 0, clock_timestamp(), clock_timestamp())
    RETURNING id::text;
$$;

-- Within the head row's priority, rows for the resident model (by params.model, or by task type when
-- the row names no model) go first, unless the head row has waited longer than the affinity window.
-- Every probe is an index walk over ready rows only (see tasks_ready_* indexes), so the cost does not
-- grow with the queue; SKIP LOCKED lets concurrent claimers pass each other without waiting.
-- plpgsql, not sql: its plan is prepared once per connection instead of planned on every call.
-- synchronous_commit off: the claim does not wait for the WAL flush (a few ms per claim on a slow disk).
-- A claim lost in a server crash only puts the row back to Queued; the claiming worker's next heartbeat
-- finds the row is not its own and stops the task, so no row is lost or completed twice.
CREATE OR REPLACE FUNCTION claim_next_task(
    p_worker_id text, p_lease_seconds double precision DEFAULT 60, p_resident_model text DEFAULT NULL,
    p_resident_task_types text[] DEFAULT '{}'::text[], p_affinity_window_seconds double precision DEFAULT 120)
RETURNS SETOF tasks LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    -- for this transaction only (a SET clause on the function would end before the commit)
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH head AS MATERIALIZED (
        SELECT t.id, t.priority, t.created_at
        FROM tasks AS t
        WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency
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
                 WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency AND t.priority = h.priority
                   AND (t.params ->> 'model') = p_resident_model
                 ORDER BY t.created_at, t.id
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED) AS c
        UNION ALL
        SELECT c.id, c.created_at
        FROM affine_head AS h, unnest(p_resident_task_types) AS rt(task_type),
        LATERAL (SELECT t.id, t.created_at FROM tasks AS t
                 WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency AND t.priority = h.priority
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

CREATE OR REPLACE FUNCTION has_claimable_task() RETURNS boolean
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'Queued' AND NOT blocked_by_dependency);
$$;

-- A lost heartbeat costs nothing: no WAL flush wait.
CREATE OR REPLACE FUNCTION heartbeat_task(
    p_task_id text, p_worker_id text, p_lease_seconds double precision, p_progress double precision DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    SELECT set_config('synchronous_commit', 'off', true);
    WITH changed AS (
        UPDATE tasks
        SET lease_expires_at = now() + make_interval(secs => p_lease_seconds),
            heartbeat_at = now(),
            progress = COALESCE(p_progress, progress)
        WHERE id = p_task_id::tasks_id_t AND worker_id = p_worker_id AND status = 'In Progress'
        RETURNING 1
    )
    SELECT count(*) > 0 FROM changed;
$$;

-- Refused (false) unless the row is still In Progress for this worker: a zombie whose lease was
-- reclaimed cannot overwrite the result of the worker that took the row over.
CREATE OR REPLACE FUNCTION complete_task(
    p_task_id text, p_worker_id text, p_output_location text DEFAULT NULL, p_result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH changed AS (
        UPDATE tasks
        SET status = 'Complete', output_location = p_output_location, result = p_result, progress = 1.0,
            error_message = NULL, lease_expires_at = NULL, generation_processed_at = now(), updated_at = now()
        WHERE id = p_task_id::tasks_id_t AND worker_id = p_worker_id AND status = 'In Progress'
        RETURNING 1
    )
    SELECT count(*) > 0 FROM changed;
$$;

CREATE OR REPLACE FUNCTION fail_task(
    p_task_id text, p_worker_id text, p_error_message text, p_result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH changed AS (
        UPDATE tasks
        SET status = 'Failed', error_message = p_error_message, result = COALESCE(p_result, result),
            lease_expires_at = NULL, generation_processed_at = now(), updated_at = now()
        WHERE id = p_task_id::tasks_id_t AND worker_id = p_worker_id AND status = 'In Progress'
        RETURNING 1
    )
    SELECT count(*) > 0 FROM changed;
$$;

CREATE OR REPLACE FUNCTION requeue_task(p_task_id text, p_worker_id text)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH changed AS (
        UPDATE tasks
        SET status = 'Queued', worker_id = NULL, attempts = greatest(attempts - 1, 0), lease_expires_at = NULL,
            heartbeat_at = NULL, progress = NULL, generation_started_at = NULL, updated_at = now()
        WHERE id = p_task_id::tasks_id_t AND worker_id = p_worker_id AND status = 'In Progress'
        RETURNING 1
    )
    SELECT count(*) > 0 FROM changed;
$$;

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
        VALUES ((child ->> 'id')::tasks_id_t, child ->> 'task_type', COALESCE(child -> 'params', '{}'::jsonb),
                'Queued', (child ->> 'dependant_on')::tasks_dependant_on_t,
                (child ->> 'project_id')::tasks_project_id_t, COALESCE((child ->> 'priority')::integer, 0),
                COALESCE((child ->> 'max_attempts')::integer, 3), 0, p_parent_task_id, child ->> 'child_key',
                clock_timestamp(), clock_timestamp())
        ON CONFLICT DO NOTHING;
    END LOOP;
    RETURN QUERY
    SELECT t.id::text, t.child_key
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
        WHERE id = p_task_id::tasks_id_t AND worker_id = p_worker_id AND status = 'In Progress'
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
        WHERE id = p_task_id::tasks_id_t AND status = 'In Progress'
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
            WHERE c.parent_task_id = p.id::text AND c.status IN ('Failed', 'Cancelled')
            ORDER BY c.updated_at, c.id LIMIT 1) AS c
        WHERE p.status = 'In Progress'
    )
    UPDATE tasks AS t
    SET status = 'Failed', error_message = causes.message, awaiting_children = false, lease_expires_at = NULL,
        generation_processed_at = now(), updated_at = now()
    FROM causes
    WHERE t.id = causes.parent_id
    RETURNING t.id::text, causes.child_id::text;
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
    WHERE t.parent_task_id = p.id::text AND t.status IN ('Queued', 'In Progress')
      AND p.status IN ('Failed', 'Cancelled')
    RETURNING t.id::text, t.parent_task_id;
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
    WHERE id = p_task_id::tasks_id_t AND status IN ('Queued', 'In Progress');
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
    WHERE id = p_task_id::tasks_id_t AND status IN ('Failed', 'Cancelled');
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
        SELECT COALESCE(array_agg(retried.id::text), '{}') INTO parents FROM retried;
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

-- Fails Queued rows whose dependency ended Failed/Cancelled (or never appeared within a minute), link
-- by link so each error names its own dependency, and runs the parent/child rules each round; ``kind``
-- says which rule ended the row (dependency, child, parent). One worker at a time (advisory lock); the
-- others skip, their turn comes at the next housekeeping.
CREATE OR REPLACE FUNCTION fail_orphaned_dependants()
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
        RETURNING t.id::text, t.dependant_on::text, 'dependency'::text;
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

CREATE OR REPLACE FUNCTION get_task(p_task_id text)
RETURNS SETOF tasks LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT * FROM tasks WHERE id = p_task_id::tasks_id_t;
$$;

CREATE OR REPLACE FUNCTION task_status(p_task_id text)
RETURNS TABLE (status text, worker_id text) LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT t.status::text, t.worker_id FROM tasks AS t WHERE t.id = p_task_id::tasks_id_t;
$$;

CREATE OR REPLACE FUNCTION list_tasks(
    p_status text DEFAULT NULL, p_task_type text DEFAULT NULL, p_limit integer DEFAULT 100)
RETURNS SETOF tasks LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT * FROM tasks
    WHERE (p_status IS NULL OR status::text = p_status) AND (p_task_type IS NULL OR task_type = p_task_type)
    ORDER BY created_at DESC, id DESC
    LIMIT p_limit;
$$;

CREATE OR REPLACE FUNCTION count_tasks_by_status()
RETURNS TABLE (status text, n bigint) LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT t.status::text, count(*) FROM tasks AS t GROUP BY t.status;
$$;

CREATE OR REPLACE FUNCTION count_tasks_by_worker()
RETURNS TABLE (worker_id text, status text, n bigint) LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT t.worker_id, t.status::text, count(*) FROM tasks AS t WHERE t.worker_id IS NOT NULL
    GROUP BY t.worker_id, t.status;
$$;

-- What an API-mode worker polls instead of LISTEN: changes whenever a row is added or changes status.
CREATE OR REPLACE FUNCTION tasks_change_marker() RETURNS text
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT COALESCE((SELECT max(updated_at) FROM tasks)::text, '');
$$;

-- The API store checks this before it starts: the schema must be at least what the code expects.
-- Every later migration replaces it with its own number.
CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 5;
$$;
