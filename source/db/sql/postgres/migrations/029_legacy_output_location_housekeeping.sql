-- --legacy-output-location (024) wrote a failed row's error into output_location when the worker itself
-- failed it; rows that housekeeping failed (a dependency cascade, leases used up, the unrunnable sweep) kept
-- an empty output_location, where frontends written for the older worker look for the error. The worker that
-- ran the housekeeping now passes those rows' ids here.

CREATE OR REPLACE FUNCTION tasks_errors_to_output_location(p_task_ids text[]) RETURNS integer
LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH changed AS (
        UPDATE tasks SET output_location = error_message
        WHERE id = ANY (p_task_ids::tasks_id_t[]) AND status = 'Failed' AND error_message IS NOT NULL
          AND output_location IS DISTINCT FROM error_message
        RETURNING 1
    )
    SELECT count(*)::integer FROM changed;
$$;

-- A token worker: only rows of its user's projects.
CREATE OR REPLACE FUNCTION user_tasks_errors_to_output_location(p_token text, p_task_ids text[]) RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT tasks_errors_to_output_location(ARRAY(
        SELECT t.id::text FROM tasks AS t
        WHERE t.id = ANY (p_task_ids::tasks_id_t[]) AND t.project_id::text = ANY (tasks_token_projects(p_token))));
$$;

SELECT tasks_add_worker_functions(ARRAY['tasks_errors_to_output_location']);

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 29;
$$;
