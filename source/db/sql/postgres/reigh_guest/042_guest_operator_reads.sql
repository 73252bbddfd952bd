-- What `tasks list/stats/workers` and the worker's metrics read, over Reigh's rows (read-only). Creating,
-- cancelling, retrying and purging rows stays Reigh's own (its web app and edge functions).
CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer LANGUAGE sql IMMUTABLE AS $$ SELECT 42 $$;

CREATE FUNCTION list_tasks(p_status text DEFAULT NULL, p_task_type text DEFAULT NULL, p_limit integer DEFAULT 100)
RETURNS SETOF task_rows LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT * FROM task_rows AS r
     WHERE (p_status IS NULL OR r.status = p_status) AND (p_task_type IS NULL OR r.task_type = p_task_type)
     ORDER BY r.created_at DESC, r.id DESC
     LIMIT p_limit;
$$;

CREATE FUNCTION count_tasks_by_status() RETURNS TABLE (status text, n bigint)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT t.status::text, count(*) FROM tasks AS t GROUP BY t.status;
$$;

CREATE FUNCTION count_tasks_by_worker() RETURNS TABLE (worker_id text, status text, n bigint)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT t.worker_id, t.status::text, count(*) FROM tasks AS t WHERE t.worker_id IS NOT NULL
     GROUP BY t.worker_id, t.status;
$$;

-- Reigh's own model field (get_task_model: model_name, orchestrator_details.model_name, model).
CREATE FUNCTION count_queued_by_kind() RETURNS TABLE (task_type text, model text, n bigint, oldest timestamptz)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT t.task_type, get_task_model(t.params), count(*), min(t.created_at) FROM tasks AS t
     WHERE t.status = 'Queued' AND get_task_run_type(t.task_type) = 'gpu' GROUP BY 1, 2 ORDER BY 3 DESC;
$$;

DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA %I FROM PUBLIC', current_schema());
END
$$;
