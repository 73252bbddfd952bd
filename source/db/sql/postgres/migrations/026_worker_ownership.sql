-- A token worker registers, renews and leaves the idle set only under worker ids of its own user. Before
-- this, any valid token could overwrite any worker's registry row (status, capabilities, idleness), the
-- service workers' included, and so steer the dispatcher (023) away from them.
-- The service side (register_worker) keeps every right and clears the owner when it (re)registers an id.

ALTER TABLE workers ADD COLUMN IF NOT EXISTS owner_user_id text NULL;

-- Rows older than this migration have no owner: an ownerless row that is no longer heard from may be taken
-- over by a token worker (a worker restarted under the same --worker id after the upgrade).
CREATE OR REPLACE FUNCTION tasks_token_worker(p_token text, p_worker_id text) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    me text := tasks_token_user(p_token);
    row_owner text;
    row_alive boolean;
BEGIN
    SELECT w.owner_user_id, w.last_heartbeat >= now() - interval '2 minutes' INTO row_owner, row_alive
    FROM workers AS w WHERE w.id = p_worker_id;
    IF FOUND AND row_owner IS DISTINCT FROM me AND (row_owner IS NOT NULL OR COALESCE(row_alive, false)) THEN
        RAISE EXCEPTION 'worker id % is registered by another user or by a service worker; start this worker with '
                        'another --worker id', p_worker_id USING ERRCODE = '42501';
    END IF;
    RETURN me;
END
$$;

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
        last_heartbeat = excluded.last_heartbeat, owner_user_id = NULL;
    SELECT true;
$$;

CREATE OR REPLACE FUNCTION user_register_worker(
    p_token text, p_id text, p_host text DEFAULT NULL, p_pid integer DEFAULT NULL, p_gpu_name text DEFAULT NULL,
    p_gpu_memory_gb double precision DEFAULT NULL, p_capabilities jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    me text := tasks_token_worker(p_token, p_id);
BEGIN
    PERFORM register_worker(p_id, p_host, p_pid, p_gpu_name, p_gpu_memory_gb, p_capabilities);
    UPDATE workers SET owner_user_id = me WHERE id = p_id;
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION user_touch_worker(
    p_token text, p_id text, p_resident_model text DEFAULT NULL, p_current_task_id text DEFAULT NULL,
    p_status text DEFAULT 'running', p_stats jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_worker(p_token, p_id) IS NOT NULL
                THEN touch_worker(p_id, p_resident_model, p_current_task_id, p_status, p_stats) END;
$$;

CREATE OR REPLACE FUNCTION user_worker_idle(
    p_token text, p_worker_id text, p_resident_model text DEFAULT NULL, p_poll_seconds double precision DEFAULT 10,
    p_task_types text[] DEFAULT NULL, p_models text[] DEFAULT NULL, p_modelless_task_types text[] DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    me text := tasks_token_worker(p_token, p_worker_id);  -- an invalid token or another's id stops here
BEGIN
    PERFORM worker_idle(p_worker_id, p_resident_model, p_poll_seconds, p_task_types, p_models,
                        p_modelless_task_types);
    UPDATE workers SET owner_user_id = me WHERE id = p_worker_id AND owner_user_id IS DISTINCT FROM me;
    -- its own statement, so its snapshot is taken after worker_idle's dispatch lock (no lost wake-up)
    RETURN user_has_claimable_task(p_token, p_task_types, p_models, p_modelless_task_types);
END
$$;

CREATE OR REPLACE FUNCTION user_worker_busy(p_token text, p_worker_id text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_worker(p_token, p_worker_id) IS NOT NULL THEN worker_busy(p_worker_id) END;
$$;

SELECT tasks_add_worker_functions(ARRAY['tasks_token_worker']);

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 26;
$$;
