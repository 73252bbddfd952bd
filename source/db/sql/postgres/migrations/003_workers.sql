-- One row per worker process: what it runs on, what it holds, when it was last seen. The registry is
-- advisory (for operators): its writes do not wait for the WAL flush.
CREATE TABLE IF NOT EXISTS workers (
    id text PRIMARY KEY,
    host text NULL,
    pid integer NULL,
    gpu_name text NULL,
    gpu_memory_gb double precision NULL,
    resident_model text NULL,
    current_task_id text NULL,
    status text NOT NULL DEFAULT 'running',
    started_at timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    -- what the worker's generation queue has done (tasks, failures, model loads and switches)
    stats jsonb NULL
);

CREATE OR REPLACE FUNCTION register_worker(
    p_id text, p_host text DEFAULT NULL, p_pid integer DEFAULT NULL, p_gpu_name text DEFAULT NULL,
    p_gpu_memory_gb double precision DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    INSERT INTO workers (id, host, pid, gpu_name, gpu_memory_gb, status, started_at, last_heartbeat)
    VALUES (p_id, p_host, p_pid, p_gpu_name, p_gpu_memory_gb, 'running', now(), now())
    ON CONFLICT (id) DO UPDATE SET
        host = excluded.host, pid = excluded.pid, gpu_name = excluded.gpu_name,
        gpu_memory_gb = excluded.gpu_memory_gb, status = 'running', resident_model = NULL,
        current_task_id = NULL, started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat;
    SELECT true;
$$;

CREATE OR REPLACE FUNCTION touch_worker(
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

CREATE OR REPLACE FUNCTION list_workers(p_alive_within_seconds double precision)
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
