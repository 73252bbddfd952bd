-- The claim's indexes hold only rows that are ready now. Rows in retry back-off (022: run_after in the future)
-- sat in them and every claim stepped over them by filter: 100,000 such rows made a claim 19.5 ms against
-- 0.7 ms (benchmarks/claim_flat.py). An index predicate cannot name now(), so a row in back-off is kept out by
-- its run_after alone (not NULL), and the claim first hands the rows that have become due back to the ready
-- set (run_after cleared: tasks_release_due_rows, one probe of tasks_run_after_idx when none is due).

CREATE OR REPLACE FUNCTION tasks_release_due_rows() RETURNS void
LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    UPDATE tasks AS t SET run_after = NULL
    FROM (SELECT d.id FROM tasks AS d
          WHERE d.status = 'Queued' AND d.run_after IS NOT NULL AND d.run_after <= now()
          ORDER BY d.run_after LIMIT 1000
          FOR UPDATE SKIP LOCKED) AS due
    WHERE t.id = due.id;
$$;

-- The claim's ready indexes again, same names, each with run_after IS NULL.
DROP INDEX IF EXISTS tasks_ready_idx;
DROP INDEX IF EXISTS tasks_ready_model_idx;
DROP INDEX IF EXISTS tasks_ready_type_idx;
DROP INDEX IF EXISTS tasks_queued_model_idx;
DROP INDEX IF EXISTS tasks_queued_type_named_idx;
DROP INDEX IF EXISTS tasks_queued_type_modelless_idx;
CREATE INDEX tasks_ready_idx ON tasks (priority DESC, created_at, id)
    WHERE status = 'Queued' AND NOT blocked_by_dependency AND run_after IS NULL;
CREATE INDEX tasks_ready_model_idx ON tasks (priority, (params ->> 'model'), created_at, id)
    WHERE status = 'Queued' AND NOT blocked_by_dependency AND run_after IS NULL;
CREATE INDEX tasks_ready_type_idx ON tasks (priority, task_type, created_at, id)
    WHERE status = 'Queued' AND NOT blocked_by_dependency AND run_after IS NULL AND (params ->> 'model') IS NULL;
CREATE INDEX tasks_queued_model_idx ON tasks ((params ->> 'model'), priority DESC, created_at, id)
    WHERE status = 'Queued' AND NOT blocked_by_dependency AND run_after IS NULL AND (params ->> 'model') IS NOT NULL;
CREATE INDEX tasks_queued_type_named_idx ON tasks (task_type, priority DESC, created_at, id)
    WHERE status = 'Queued' AND NOT blocked_by_dependency AND run_after IS NULL AND (params ->> 'model') IS NOT NULL;
CREATE INDEX tasks_queued_type_modelless_idx ON tasks (task_type, priority DESC, created_at, id)
    WHERE status = 'Queued' AND NOT blocked_by_dependency AND run_after IS NULL AND (params ->> 'model') IS NULL;

-- The claim bodies (007's tasks_claim_any, 023's tasks_capable_heads) keep their text but for one condition:
-- "(t.run_after IS NULL OR t.run_after <= now())" becomes "t.run_after IS NULL", which the planner needs to
-- match the indexes above. Edited in place rather than repeated here (150 lines): each must change, or the
-- migration stops.
DO $$
DECLARE
    fn regprocedure;
    body text;
BEGIN
    FOREACH fn IN ARRAY ARRAY[
        'tasks_claim_any(text, double precision, text, text[], double precision, text[])'::regprocedure,
        'tasks_capable_heads(text[], text[], text[], text[], text)'::regprocedure] LOOP
        body := pg_get_functiondef(fn);
        IF position('(t.run_after IS NULL OR t.run_after <= now())' IN body) = 0 THEN
            RAISE EXCEPTION 'migration 032: % has no run_after condition to change', fn;
        END IF;
        EXECUTE replace(body, '(t.run_after IS NULL OR t.run_after <= now())', 't.run_after IS NULL');
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION claim_next_task(
    p_worker_id text, p_lease_seconds double precision DEFAULT 60, p_resident_model text DEFAULT NULL,
    p_resident_task_types text[] DEFAULT '{}'::text[], p_affinity_window_seconds double precision DEFAULT 120,
    p_project_ids text[] DEFAULT NULL, p_task_types text[] DEFAULT NULL, p_models text[] DEFAULT NULL,
    p_modelless_task_types text[] DEFAULT NULL)
RETURNS SETOF tasks LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM tasks_release_due_rows();
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

-- Ready now, or due and waiting for the next claim to release it (the idle loop asks this before claiming).
CREATE OR REPLACE FUNCTION has_claimable_task(
    p_task_types text[] DEFAULT NULL, p_models text[] DEFAULT NULL, p_modelless_task_types text[] DEFAULT NULL,
    p_project_ids text[] DEFAULT NULL)
RETURNS boolean LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT EXISTS (SELECT 1 FROM tasks AS t
                   WHERE t.status = 'Queued' AND t.run_after IS NOT NULL AND t.run_after <= now()
                     AND NOT t.blocked_by_dependency
                     AND (p_project_ids IS NULL OR t.project_id::text = ANY (p_project_ids)))
        OR CASE
            WHEN p_task_types IS NULL AND p_models IS NULL AND p_modelless_task_types IS NULL THEN
                EXISTS (SELECT 1 FROM tasks AS t WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency
                                                   AND t.run_after IS NULL
                                                   AND (p_project_ids IS NULL OR t.project_id::text = ANY (p_project_ids)))
            ELSE EXISTS (SELECT 1 FROM tasks_capable_heads(p_task_types, p_models, p_modelless_task_types,
                                                           p_project_ids))
        END;
$$;

SELECT tasks_add_worker_functions(ARRAY['tasks_release_due_rows']);

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 32;
$$;
