-- tasks purge: delete ended rows older than a cut-off (operators only, never workers). A row an unfinished
-- row still needs (its dependency, or its parent) is kept. p_dry_run: list what would go, delete nothing.
CREATE OR REPLACE FUNCTION purge_tasks(p_older_than_seconds double precision, p_statuses text[],
                                       p_dry_run boolean DEFAULT false)
RETURNS TABLE (id text, status text, output_location text)
LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH doomed AS (
        SELECT t.id FROM tasks AS t
        WHERE t.status::text = ANY (p_statuses)
          AND t.status::text IN ('Complete', 'Failed', 'Cancelled')
          AND COALESCE(t.updated_at, t.created_at) < now() - make_interval(secs => p_older_than_seconds)
          AND NOT EXISTS (SELECT 1 FROM tasks AS c
                          WHERE (c.dependant_on::text = t.id::text OR c.parent_task_id = t.id::text)
                            AND c.status::text IN ('Queued', 'In Progress'))
        FOR UPDATE SKIP LOCKED
    ), deleted AS (
        DELETE FROM tasks AS t USING doomed
        WHERE t.id = doomed.id AND NOT p_dry_run
        RETURNING t.id::text, t.status::text, t.output_location
    )
    SELECT * FROM deleted
    UNION ALL
    SELECT t.id::text, t.status::text, t.output_location FROM tasks AS t JOIN doomed ON t.id = doomed.id
    WHERE p_dry_run;
$$;

-- Locked away here as well as by tasks_worker_functions() (an operator function): Supabase's default privileges
-- would hand a new function to anon and authenticated.
REVOKE EXECUTE ON FUNCTION purge_tasks(double precision, text[], boolean) FROM PUBLIC;
DO $$
BEGIN
    IF tasks_supabase_roles_exist() THEN
        REVOKE EXECUTE ON FUNCTION purge_tasks(double precision, text[], boolean) FROM anon, authenticated;
        GRANT EXECUTE ON FUNCTION purge_tasks(double precision, text[], boolean) TO service_role;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 20;
$$;
