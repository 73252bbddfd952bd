-- Webhooks (source/worker/webhooks.py) are delivered after a row is written Complete/Failed/Cancelled, off
-- the worker's loop; what each delivery came to then goes into the row's result.webhooks.

CREATE OR REPLACE FUNCTION tasks_record_webhook_deliveries(p_task_id text, p_worker_id text, p_deliveries jsonb)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH changed AS (
        UPDATE tasks SET result = COALESCE(result, '{}'::jsonb) || jsonb_build_object('webhooks', p_deliveries)
        WHERE id = p_task_id::tasks_id_t AND worker_id = p_worker_id
          AND status::text IN ('Complete', 'Failed', 'Cancelled')
        RETURNING 1
    )
    SELECT count(*) > 0 FROM changed;
$$;

-- A token worker: only rows of its user's projects.
CREATE OR REPLACE FUNCTION user_tasks_record_webhook_deliveries(p_token text, p_task_id text, p_worker_id text,
                                                                p_deliveries jsonb)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_task(p_token, p_task_id)
                THEN tasks_record_webhook_deliveries(p_task_id, p_worker_id, p_deliveries) ELSE false END;
$$;

SELECT tasks_add_worker_functions(ARRAY['tasks_record_webhook_deliveries']);

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 50;
$$;
