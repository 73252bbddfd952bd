-- Capabilities in the claim (issue 18, and issue 23's "capability filters respected when choosing"): a worker
-- says what it can run as three lists (NULL = unrestricted; see source/db/models.py Capabilities):
--   p_task_types, p_models: a row naming params.model is claimable iff its task type and its model are allowed;
--   p_modelless_task_types: a row naming no model is claimable iff its task type is in this list.
-- A worker with no restriction calls the claim exactly as before (tasks_claim_any, 007's claim renamed). One with
-- restrictions takes the first ready row of each allowed model and of each allowed model-less task type (one
-- index probe each: the tasks_queued_* indexes below), then the best of those heads in the claim's own order
-- (priority, model affinity, age), so the cost does not grow with queued rows that worker cannot run.
-- The workers table keeps each worker's lists, and the wake-one dispatcher (011) only wakes an idle worker
-- that can run the row: a row no idle worker can run wakes nobody (`tasks stats` reports it as stuck).

CREATE INDEX IF NOT EXISTS tasks_queued_model_idx ON tasks ((params ->> 'model'), priority DESC, created_at, id)
    WHERE status = 'Queued' AND NOT blocked_by_dependency AND (params ->> 'model') IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_queued_type_named_idx ON tasks (task_type, priority DESC, created_at, id)
    WHERE status = 'Queued' AND NOT blocked_by_dependency AND (params ->> 'model') IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_queued_type_modelless_idx ON tasks (task_type, priority DESC, created_at, id)
    WHERE status = 'Queued' AND NOT blocked_by_dependency AND (params ->> 'model') IS NULL;

ALTER TABLE workers ADD COLUMN IF NOT EXISTS capabilities jsonb NULL;

CREATE OR REPLACE FUNCTION tasks_capabilities_json(
    p_task_types text[], p_models text[], p_modelless_task_types text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT jsonb_build_object('task_types', to_jsonb(p_task_types), 'models', to_jsonb(p_models),
                              'modelless_task_types', to_jsonb(p_modelless_task_types));
$$;

-- The claim's rule for one row, against a workers.capabilities value (NULL or a JSON null list: unrestricted).
CREATE OR REPLACE FUNCTION tasks_worker_accepts(p_capabilities jsonb, p_task_type text, p_model text)
RETURNS boolean LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT COALESCE(CASE
        WHEN p_model IS NULL THEN
            jsonb_typeof(p_capabilities -> 'modelless_task_types') IS DISTINCT FROM 'array'
            OR (p_capabilities -> 'modelless_task_types') ? p_task_type
        ELSE
            (jsonb_typeof(p_capabilities -> 'task_types') IS DISTINCT FROM 'array'
             OR (p_capabilities -> 'task_types') ? p_task_type)
            AND (jsonb_typeof(p_capabilities -> 'models') IS DISTINCT FROM 'array'
                 OR (p_capabilities -> 'models') ? p_model)
        END, false);
$$;

-- The first ready row of each group a worker may claim, without locks: one statement per kind of group, each
-- an ordered walk of one tasks_queued_* index that stops at its first row. Plans are prepared once per connection
-- (generic: planning the probes for each call's values cost a millisecond, twenty times the probes), and a generic
-- plan estimates the run_after/project conditions at one row, which makes reading a whole group and sorting it
-- look cheaper than the ordered walk: sorts and bitmap scans are off inside this function. A list left NULL beside
-- others (no worker of ours sends that: a restricted worker always sends p_modelless_task_types and one of the
-- other two) means one walk over all the rows naming a model / naming none.
CREATE OR REPLACE FUNCTION tasks_capable_heads(
    p_task_types text[], p_models text[], p_modelless_task_types text[], p_project_ids text[] DEFAULT NULL,
    p_resident_model text DEFAULT NULL)
RETURNS TABLE (id text, priority integer, created_at timestamptz, model text, task_type text)
LANGUAGE plpgsql STABLE SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan
    SET enable_sort = off SET enable_incremental_sort = off SET enable_bitmapscan = off AS $$
BEGIN
    IF p_models IS NOT NULL AND p_task_types IS NULL THEN
        -- each allowed model: its first row
        RETURN QUERY SELECT h.* FROM unnest(p_models) AS m(model), LATERAL (
            SELECT t.id::text, t.priority, t.created_at, t.params ->> 'model', t.task_type FROM tasks AS t
            WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency AND (t.params ->> 'model') = m.model
              AND (t.run_after IS NULL OR t.run_after <= now())
              AND (p_project_ids IS NULL OR t.project_id::text = ANY (p_project_ids))
            ORDER BY t.priority DESC, t.created_at, t.id LIMIT 1) AS h;
    ELSIF p_models IS NOT NULL THEN
        -- each allowed model: its first row whose task type is allowed too
        RETURN QUERY SELECT h.* FROM unnest(p_models) AS m(model), LATERAL (
            SELECT t.id::text, t.priority, t.created_at, t.params ->> 'model', t.task_type FROM tasks AS t
            WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency AND (t.params ->> 'model') = m.model
              AND t.task_type = ANY (p_task_types)
              AND (t.run_after IS NULL OR t.run_after <= now())
              AND (p_project_ids IS NULL OR t.project_id::text = ANY (p_project_ids))
            ORDER BY t.priority DESC, t.created_at, t.id LIMIT 1) AS h;
    ELSIF p_task_types IS NOT NULL THEN
        -- any model, restricted task types: per task type, its first row naming a model; and the resident
        -- model's first row (the affinity order needs it among the heads)
        RETURN QUERY SELECT h.* FROM unnest(p_task_types) AS tt(task_type), LATERAL (
            SELECT t.id::text, t.priority, t.created_at, t.params ->> 'model', t.task_type FROM tasks AS t
            WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency AND (t.params ->> 'model') IS NOT NULL
              AND t.task_type = tt.task_type
              AND (t.run_after IS NULL OR t.run_after <= now())
              AND (p_project_ids IS NULL OR t.project_id::text = ANY (p_project_ids))
            ORDER BY t.priority DESC, t.created_at, t.id LIMIT 1) AS h;
        RETURN QUERY SELECT h.* FROM unnest(ARRAY[p_resident_model]) AS r(model), LATERAL (
            SELECT t.id::text, t.priority, t.created_at, t.params ->> 'model', t.task_type FROM tasks AS t
            WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency AND (t.params ->> 'model') = r.model
              AND t.task_type = ANY (p_task_types)
              AND (t.run_after IS NULL OR t.run_after <= now())
              AND (p_project_ids IS NULL OR t.project_id::text = ANY (p_project_ids))
            ORDER BY t.priority DESC, t.created_at, t.id LIMIT 1) AS h;
    ELSE
        RETURN QUERY SELECT h.* FROM (SELECT) AS one, LATERAL (
            SELECT t.id::text, t.priority, t.created_at, t.params ->> 'model', t.task_type FROM tasks AS t
            WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency AND (t.params ->> 'model') IS NOT NULL
              AND (t.run_after IS NULL OR t.run_after <= now())
              AND (p_project_ids IS NULL OR t.project_id::text = ANY (p_project_ids))
            ORDER BY t.priority DESC, t.created_at, t.id LIMIT 1) AS h;
        RETURN QUERY SELECT h.* FROM unnest(ARRAY[p_resident_model]) AS r(model), LATERAL (
            SELECT t.id::text, t.priority, t.created_at, t.params ->> 'model', t.task_type FROM tasks AS t
            WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency AND (t.params ->> 'model') = r.model
              AND (t.run_after IS NULL OR t.run_after <= now())
              AND (p_project_ids IS NULL OR t.project_id::text = ANY (p_project_ids))
            ORDER BY t.priority DESC, t.created_at, t.id LIMIT 1) AS h;
    END IF;
    IF p_modelless_task_types IS NOT NULL THEN
        -- each allowed model-less task type: its first row naming no model
        RETURN QUERY SELECT h.* FROM unnest(p_modelless_task_types) AS tt(task_type), LATERAL (
            SELECT t.id::text, t.priority, t.created_at, t.params ->> 'model', t.task_type FROM tasks AS t
            WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency AND (t.params ->> 'model') IS NULL
              AND t.task_type = tt.task_type
              AND (t.run_after IS NULL OR t.run_after <= now())
              AND (p_project_ids IS NULL OR t.project_id::text = ANY (p_project_ids))
            ORDER BY t.priority DESC, t.created_at, t.id LIMIT 1) AS h;
    ELSE
        RETURN QUERY SELECT h.* FROM (SELECT) AS one, LATERAL (
            SELECT t.id::text, t.priority, t.created_at, t.params ->> 'model', t.task_type FROM tasks AS t
            WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency AND (t.params ->> 'model') IS NULL
              AND (t.run_after IS NULL OR t.run_after <= now())
              AND (p_project_ids IS NULL OR t.project_id::text = ANY (p_project_ids))
            ORDER BY t.priority DESC, t.created_at, t.id LIMIT 1) AS h;
    END IF;
END
$$;

-- The restricted claim: the heads in the claim's order (as 007: within the top priority, rows of the resident
-- model, or of its task types when they name no model, first unless older than the affinity window), each
-- taken with SKIP LOCKED until one is free. Heads all taken by concurrent claimers: wait for the first one's
-- claim to commit and look again (a few rounds at most), so a busy group never reads as an empty queue.
CREATE OR REPLACE FUNCTION tasks_claim_capable(
    p_worker_id text, p_lease_seconds double precision, p_resident_model text, p_resident_task_types text[],
    p_affinity_window_seconds double precision, p_project_ids text[], p_task_types text[], p_models text[],
    p_modelless_task_types text[])
RETURNS SETOF tasks LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    cand record;
    first_id text;
    taken text;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR attempt IN 1..5 LOOP
        first_id := NULL;
        FOR cand IN
            SELECT h.id FROM tasks_capable_heads(p_task_types, p_models, p_modelless_task_types, p_project_ids,
                                                 p_resident_model) AS h
            ORDER BY h.priority DESC,
                     CASE WHEN h.created_at <= now() - make_interval(secs => p_affinity_window_seconds) THEN 0
                          WHEN p_resident_model IS NOT NULL AND h.model = p_resident_model THEN 0
                          WHEN p_resident_model IS NOT NULL AND h.model IS NULL
                               AND h.task_type = ANY (p_resident_task_types) THEN 0
                          ELSE 1 END,
                     h.created_at, h.id
        LOOP
            first_id := COALESCE(first_id, cand.id);
            SELECT t.id::text INTO taken FROM tasks AS t
            WHERE t.id = cand.id::tasks_id_t AND t.status = 'Queued' AND NOT t.blocked_by_dependency
            FOR UPDATE SKIP LOCKED;
            IF taken IS NOT NULL THEN
                RETURN QUERY
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
                WHERE tasks.id = taken::tasks_id_t
                RETURNING tasks.*;
                RETURN;
            END IF;
        END LOOP;
        EXIT WHEN first_id IS NULL;  -- nothing this worker can run
        PERFORM 1 FROM tasks AS t WHERE t.id = first_id::tasks_id_t AND t.status = 'Queued' FOR UPDATE;
    END LOOP;
END
$$;

-- 007's claim keeps its body and plan under a new name; claim_next_task chooses between the two. Calls with
-- the earlier arguments (older workers, named arguments) reach tasks_claim_any unchanged.
ALTER FUNCTION claim_next_task(text, double precision, text, text[], double precision, text[])
    RENAME TO tasks_claim_any;

CREATE OR REPLACE FUNCTION claim_next_task(
    p_worker_id text, p_lease_seconds double precision DEFAULT 60, p_resident_model text DEFAULT NULL,
    p_resident_task_types text[] DEFAULT '{}'::text[], p_affinity_window_seconds double precision DEFAULT 120,
    p_project_ids text[] DEFAULT NULL, p_task_types text[] DEFAULT NULL, p_models text[] DEFAULT NULL,
    p_modelless_task_types text[] DEFAULT NULL)
RETURNS SETOF tasks LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    IF p_task_types IS NULL AND p_models IS NULL AND p_modelless_task_types IS NULL THEN
        RETURN QUERY SELECT * FROM tasks_claim_any(p_worker_id, p_lease_seconds, p_resident_model,
                                                   p_resident_task_types, p_affinity_window_seconds, p_project_ids);
    ELSE
        RETURN QUERY SELECT * FROM tasks_claim_capable(p_worker_id, p_lease_seconds, p_resident_model,
                                                       p_resident_task_types, p_affinity_window_seconds,
                                                       p_project_ids, p_task_types, p_models, p_modelless_task_types);
    END IF;
END
$$;

DROP FUNCTION IF EXISTS has_claimable_task();
CREATE OR REPLACE FUNCTION has_claimable_task(
    p_task_types text[] DEFAULT NULL, p_models text[] DEFAULT NULL, p_modelless_task_types text[] DEFAULT NULL,
    p_project_ids text[] DEFAULT NULL)
RETURNS boolean LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT CASE
        WHEN p_task_types IS NULL AND p_models IS NULL AND p_modelless_task_types IS NULL THEN
            EXISTS (SELECT 1 FROM tasks AS t WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency
                                               AND (t.run_after IS NULL OR t.run_after <= now())
                                               AND (p_project_ids IS NULL OR t.project_id::text = ANY (p_project_ids)))
        ELSE EXISTS (SELECT 1 FROM tasks_capable_heads(p_task_types, p_models, p_modelless_task_types, p_project_ids))
    END;
$$;

DROP FUNCTION IF EXISTS user_claim_next_task(text, text, double precision, text, text[], double precision);
CREATE OR REPLACE FUNCTION user_claim_next_task(
    p_token text, p_worker_id text, p_lease_seconds double precision DEFAULT 60,
    p_resident_model text DEFAULT NULL, p_resident_task_types text[] DEFAULT '{}'::text[],
    p_affinity_window_seconds double precision DEFAULT 120, p_task_types text[] DEFAULT NULL,
    p_models text[] DEFAULT NULL, p_modelless_task_types text[] DEFAULT NULL)
RETURNS SETOF tasks LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT * FROM claim_next_task(p_worker_id, p_lease_seconds, p_resident_model, p_resident_task_types,
                                  p_affinity_window_seconds, tasks_token_projects(p_token), p_task_types, p_models,
                                  p_modelless_task_types);
$$;

DROP FUNCTION IF EXISTS user_has_claimable_task(text);
CREATE OR REPLACE FUNCTION user_has_claimable_task(
    p_token text, p_task_types text[] DEFAULT NULL, p_models text[] DEFAULT NULL,
    p_modelless_task_types text[] DEFAULT NULL)
RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT has_claimable_task(p_task_types, p_models, p_modelless_task_types, tasks_token_projects(p_token));
$$;

-- The registry keeps each worker's capabilities (NULL: a worker of an earlier version, unrestricted).
DROP FUNCTION IF EXISTS register_worker(text, text, integer, text, double precision);
CREATE OR REPLACE FUNCTION register_worker(
    p_id text, p_host text DEFAULT NULL, p_pid integer DEFAULT NULL, p_gpu_name text DEFAULT NULL,
    p_gpu_memory_gb double precision DEFAULT NULL, p_capabilities jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    INSERT INTO workers (id, host, pid, gpu_name, gpu_memory_gb, capabilities, status, started_at, last_heartbeat)
    VALUES (p_id, p_host, p_pid, p_gpu_name, p_gpu_memory_gb, p_capabilities, 'running', now(), now())
    ON CONFLICT (id) DO UPDATE SET
        host = excluded.host, pid = excluded.pid, gpu_name = excluded.gpu_name,
        gpu_memory_gb = excluded.gpu_memory_gb, capabilities = excluded.capabilities, status = 'running',
        resident_model = NULL, current_task_id = NULL, started_at = excluded.started_at,
        last_heartbeat = excluded.last_heartbeat;
    SELECT true;
$$;

DROP FUNCTION IF EXISTS user_register_worker(text, text, text, integer, text, double precision);
CREATE OR REPLACE FUNCTION user_register_worker(
    p_token text, p_id text, p_host text DEFAULT NULL, p_pid integer DEFAULT NULL, p_gpu_name text DEFAULT NULL,
    p_gpu_memory_gb double precision DEFAULT NULL, p_capabilities jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_user(p_token) IS NOT NULL
                THEN register_worker(p_id, p_host, p_pid, p_gpu_name, p_gpu_memory_gb, p_capabilities) END;
$$;

DROP FUNCTION IF EXISTS list_workers(double precision);
CREATE OR REPLACE FUNCTION list_workers(p_alive_within_seconds double precision)
RETURNS TABLE (id text, host text, pid integer, gpu_name text, gpu_memory_gb double precision,
               resident_model text, current_task_id text, status text, started_at timestamptz,
               last_heartbeat timestamptz, alive boolean, stats jsonb, capabilities jsonb)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT w.id, w.host, w.pid, w.gpu_name, w.gpu_memory_gb, w.resident_model, w.current_task_id, w.status,
           w.started_at, w.last_heartbeat,
           w.status = 'running' AND w.last_heartbeat >= now() - make_interval(secs => p_alive_within_seconds),
           w.stats, w.capabilities
    FROM workers AS w
    ORDER BY w.started_at DESC;
$$;

-- Going idle also says what the worker can run (the dispatcher reads it) and answers whether a row it can
-- run is claimable now.
DROP FUNCTION IF EXISTS worker_idle(text, text, double precision);
CREATE OR REPLACE FUNCTION worker_idle(
    p_worker_id text, p_resident_model text DEFAULT NULL, p_poll_seconds double precision DEFAULT 10,
    p_task_types text[] DEFAULT NULL, p_models text[] DEFAULT NULL, p_modelless_task_types text[] DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM tasks_dispatch_lock();
    INSERT INTO workers AS w (id, status, resident_model, capabilities, idle_since, idle_expires_at, last_heartbeat)
    VALUES (p_worker_id, 'running', p_resident_model,
            tasks_capabilities_json(p_task_types, p_models, p_modelless_task_types), now(),
            now() + make_interval(secs => 2 * p_poll_seconds), now())
    ON CONFLICT (id) DO UPDATE SET
        status = 'running', resident_model = excluded.resident_model, capabilities = excluded.capabilities,
        current_task_id = NULL, idle_since = COALESCE(w.idle_since, excluded.idle_since),
        idle_expires_at = excluded.idle_expires_at, woken_at = NULL, last_heartbeat = excluded.last_heartbeat;
    RETURN has_claimable_task(p_task_types, p_models, p_modelless_task_types);
END
$$;

-- p_models / p_task_types: one element per newly claimable row (its params.model, NULL when it names none,
-- and its task type). Each row wakes at most one idle worker that can run it, the one holding its model
-- first; a row no idle worker can run wakes nobody.
DROP FUNCTION IF EXISTS tasks_wake_idle_workers(text[]);
CREATE OR REPLACE FUNCTION tasks_wake_idle_workers(p_models text[], p_task_types text[] DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    wanted text;
    wanted_type text;
    chosen text;
    woken integer := 0;
BEGIN
    IF COALESCE(cardinality(p_models), 0) = 0 THEN
        RETURN 0;
    END IF;
    PERFORM tasks_dispatch_lock();
    FOR i IN 1..cardinality(p_models) LOOP
        wanted := p_models[i];
        wanted_type := p_task_types[i];
        UPDATE workers AS w SET idle_since = NULL, idle_expires_at = NULL, woken_at = clock_timestamp()
        WHERE w.id = COALESCE(
            (SELECT m.id FROM workers AS m
             WHERE wanted IS NOT NULL AND m.idle_since IS NOT NULL AND m.resident_model = wanted
               AND m.idle_expires_at > now() AND tasks_worker_accepts(m.capabilities, wanted_type, wanted)
             ORDER BY m.idle_since LIMIT 1),
            (SELECT a.id FROM workers AS a
             WHERE a.idle_since IS NOT NULL AND a.idle_expires_at > now()
               AND tasks_worker_accepts(a.capabilities, wanted_type, wanted)
             ORDER BY a.idle_since LIMIT 1))
        RETURNING w.id INTO chosen;
        CONTINUE WHEN NOT FOUND;  -- nobody idle can run this row; a later one may suit another worker
        PERFORM pg_notify(tasks_worker_channel(chosen), 'wake');
        woken := woken + 1;
    END LOOP;
    RETURN woken;
END
$$;

-- The three places that wake workers pass each row's task type beside its model (otherwise as in 011).
CREATE OR REPLACE FUNCTION tasks_dispatch_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    models text[];
    task_types text[];
BEGIN
    SELECT array_agg(n.params ->> 'model' ORDER BY n.priority DESC, n.created_at),
           array_agg(n.task_type ORDER BY n.priority DESC, n.created_at)
    INTO models, task_types
    FROM new_rows AS n WHERE n.status = 'Queued' AND NOT n.blocked_by_dependency;
    PERFORM tasks_wake_idle_workers(models, task_types);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION tasks_dispatch_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.worker_id IS NOT NULL AND OLD.status = 'In Progress' THEN
            PERFORM pg_notify(tasks_worker_channel(OLD.worker_id), 'task');
        END IF;
        RETURN NULL;
    END IF;
    IF NEW.status = 'Queued' AND NOT NEW.blocked_by_dependency THEN
        PERFORM tasks_wake_idle_workers(ARRAY[NEW.params ->> 'model'], ARRAY[NEW.task_type]);
    ELSIF NEW.status = 'Cancelled' AND OLD.worker_id IS NOT NULL THEN
        PERFORM pg_notify(tasks_worker_channel(OLD.worker_id), 'task');
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION tasks_unblock_dependants() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    models text[];
    task_types text[];
BEGIN
    WITH unblocked AS (
        UPDATE tasks SET blocked_by_dependency = false
        WHERE dependant_on = NEW.id AND blocked_by_dependency
        RETURNING params ->> 'model' AS model, task_type, status
    )
    SELECT array_agg(u.model) FILTER (WHERE u.status = 'Queued'),
           array_agg(u.task_type) FILTER (WHERE u.status = 'Queued')
    INTO models, task_types FROM unblocked AS u;
    IF models IS NOT NULL THEN
        PERFORM pg_notify('tasks_changed', TG_TABLE_SCHEMA);  -- workers of earlier versions
        PERFORM tasks_wake_idle_workers(models, task_types);
    END IF;
    RETURN NULL;
END
$$;

ALTER FUNCTION tasks_dispatch_inserted() SECURITY DEFINER;
ALTER FUNCTION tasks_dispatch_changed() SECURITY DEFINER;
ALTER FUNCTION tasks_unblock_dependants() SECURITY DEFINER;

-- `tasks stats` / `tasks list --stuck`: the Queued rows by (task type, params.model), to hold against what the
-- live workers accept (an operator's read: one pass over the Queued rows).
CREATE OR REPLACE FUNCTION count_queued_by_kind()
RETURNS TABLE (task_type text, model text, n bigint, oldest timestamptz)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT t.task_type, t.params ->> 'model', count(*), min(t.created_at) FROM tasks AS t
    WHERE t.status = 'Queued' GROUP BY 1, 2 ORDER BY 3 DESC;
$$;

-- New worker functions join 006's list (and so its grants, applied by tasks_apply_security() after every
-- migration run): each migration names only what it adds, instead of repeating the whole list.
CREATE OR REPLACE FUNCTION tasks_add_worker_functions(p_names text[]) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION tasks_worker_functions() RETURNS text[]
        LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $b$ SELECT %L::text[] $b$ $f$,
        ARRAY(SELECT DISTINCT unnest(tasks_worker_functions() || p_names)));
END
$$;

SELECT tasks_add_worker_functions(ARRAY[
    'tasks_add_worker_functions', 'tasks_claim_any', 'tasks_claim_capable', 'tasks_capable_heads',
    'tasks_worker_accepts', 'tasks_capabilities_json', 'count_queued_by_kind']);

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 23;
$$;
