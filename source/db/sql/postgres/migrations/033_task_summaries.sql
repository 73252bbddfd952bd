-- The status page's overview lists rows without their params or result (a row may hold a million characters
-- of each; reading and decoding the newest 500 rows' params every refresh took 3.5 s): the prompt's first
-- characters are read here.
CREATE OR REPLACE FUNCTION list_task_summaries(p_status text DEFAULT NULL, p_limit integer DEFAULT 100)
RETURNS TABLE (id text, task_type text, status text, priority integer, progress double precision, worker_id text,
               created_at timestamptz, updated_at timestamptz, generation_started_at timestamptz,
               generation_processed_at timestamptz, output_location text, error_message text, parent_task_id text,
               prompt text)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT t.id::text, t.task_type, t.status::text, t.priority, t.progress, t.worker_id, t.created_at::timestamptz,
           t.updated_at::timestamptz, t.generation_started_at::timestamptz, t.generation_processed_at::timestamptz,
           t.output_location, left(t.error_message, 2000), t.parent_task_id,
           left(CASE WHEN jsonb_typeof(t.params::jsonb -> 'prompt') = 'string' THEN t.params::jsonb ->> 'prompt' END,
                200)
    FROM tasks AS t
    WHERE p_status IS NULL OR t.status::text = p_status
    ORDER BY t.created_at DESC, t.id DESC
    LIMIT p_limit;
$$;

SELECT tasks_add_worker_functions(ARRAY['list_task_summaries']);

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 33;
$$;
