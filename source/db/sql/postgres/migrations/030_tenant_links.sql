-- Rows of many users share one queue: a link between two rows (parent_task_id, child_key, dependant_on) is
-- honoured only inside one project. Before this, a user B who knew one id of user A's could complete or fail
-- A's orchestrator (a child row naming it as parent), have A's chain adopt B's row (a pre-inserted derived
-- child id), and read A's error text through a dependency (docs/security.md).
-- A row of another project reads as a row that does not exist: the same refusal, the same wait, the same
-- error text, so a link cannot be used to learn whether another tenant's id exists.
-- A row without a project (what the service side inserts: workers, the operator's CLI, the single-tenant queue)
-- may link to any row; a row of a project only to rows of that same project (never to a row without one).

-- Links written at insert (or changed later): a parent must be a row of the same project; a child_key only
-- comes with a parent. Runs as the table's owner: the caller may not see the parent it names.
CREATE OR REPLACE FUNCTION tasks_check_links() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.child_key IS NOT NULL AND NEW.parent_task_id IS NULL THEN
        RAISE EXCEPTION 'child_key needs a parent_task_id' USING ERRCODE = '23514';
    END IF;
    IF NEW.parent_task_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM tasks AS p
        WHERE p.id = NEW.parent_task_id::tasks_id_t
          AND (NEW.project_id IS NULL OR p.project_id::text = NEW.project_id::text)) THEN
        RAISE EXCEPTION 'parent_task_id % names no task of this row''s project', NEW.parent_task_id
            USING ERRCODE = '23503';
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS tasks_check_links ON tasks;
CREATE TRIGGER tasks_check_links BEFORE INSERT OR UPDATE OF parent_task_id, child_key, project_id ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_check_links();

-- A dependency counts only in the row's own project: another project's row blocks like a missing one.
CREATE OR REPLACE FUNCTION tasks_set_blocked() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    parent_status text;
BEGIN
    IF NEW.status <> 'Queued' THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.status = 'Queued' AND OLD.dependant_on IS NOT DISTINCT FROM NEW.dependant_on
       AND OLD.project_id IS NOT DISTINCT FROM NEW.project_id THEN
        RETURN NEW;
    END IF;
    IF NEW.dependant_on IS NULL THEN
        NEW.blocked_by_dependency := false;
    ELSIF TG_OP = 'INSERT' THEN
        -- FOR SHARE: a dependency completing right now either commits first (we read Complete) or
        -- waits for this insert to commit, after which its unblock trigger sees this row.
        SELECT d.status INTO parent_status FROM tasks AS d
        WHERE d.id = NEW.dependant_on AND (NEW.project_id IS NULL OR d.project_id::text = NEW.project_id::text) FOR SHARE;
        NEW.blocked_by_dependency := parent_status IS DISTINCT FROM 'Complete';
    ELSE
        SELECT d.status INTO parent_status FROM tasks AS d
        WHERE d.id = NEW.dependant_on AND (NEW.project_id IS NULL OR d.project_id::text = NEW.project_id::text);
        NEW.blocked_by_dependency := parent_status IS DISTINCT FROM 'Complete';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION tasks_unblock_dependants() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    unblocked text[];
BEGIN
    WITH changed AS (
        UPDATE tasks SET blocked_by_dependency = false
        WHERE dependant_on = NEW.id AND blocked_by_dependency
          AND (project_id IS NULL OR project_id::text = NEW.project_id::text)
        RETURNING id::text AS id, status
    )
    SELECT array_agg(c.id) FILTER (WHERE c.status = 'Queued') INTO unblocked FROM changed AS c;
    IF unblocked IS NOT NULL THEN
        PERFORM pg_notify('tasks_changed', TG_TABLE_SCHEMA);  -- workers of earlier versions
        PERFORM tasks_wake_idle_workers(unblocked);
    END IF;
    RETURN NULL;
END
$$;

-- Children: inserted in the parent's project whatever the payload says; a child id already held by a row
-- that is not that child (another tenant who pre-inserted it: ids are derived from the parent's) stops the
-- whole chain with that reason instead of being adopted.
CREATE OR REPLACE FUNCTION add_child_tasks(p_parent_task_id text, p_children jsonb)
RETURNS TABLE (id text, child_key text) LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    child jsonb;
    parent_project text;
    taken text;
BEGIN
    SELECT p.project_id::text INTO parent_project FROM tasks AS p WHERE p.id = p_parent_task_id::tasks_id_t;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'parent task % does not exist', p_parent_task_id USING ERRCODE = '23503';
    END IF;
    FOR child IN SELECT value FROM jsonb_array_elements(p_children -> 'children') LOOP
        INSERT INTO tasks (id, task_type, params, status, dependant_on, project_id, priority, max_attempts,
                           attempts, parent_task_id, child_key, created_at, updated_at)
        VALUES ((child ->> 'id')::tasks_id_t, child ->> 'task_type', COALESCE(child -> 'params', '{}'::jsonb),
                'Queued', (child ->> 'dependant_on')::tasks_dependant_on_t,
                parent_project::tasks_project_id_t, COALESCE((child ->> 'priority')::integer, 0),
                COALESCE((child ->> 'max_attempts')::integer, 3), 0, p_parent_task_id, child ->> 'child_key',
                clock_timestamp(), clock_timestamp())
        ON CONFLICT DO NOTHING;
    END LOOP;
    SELECT c.child ->> 'id' INTO taken
    FROM jsonb_array_elements(p_children -> 'children') AS c(child)
    JOIN tasks AS t ON t.id = (c.child ->> 'id')::tasks_id_t
    WHERE t.parent_task_id IS DISTINCT FROM p_parent_task_id OR t.child_key IS DISTINCT FROM c.child ->> 'child_key'
       OR t.project_id::text IS DISTINCT FROM parent_project
    LIMIT 1;
    IF taken IS NOT NULL THEN
        RAISE EXCEPTION 'child id % is already taken by a row that is not that child of task %; no child was created',
            taken, p_parent_task_id USING ERRCODE = '23505';
    END IF;
    RETURN QUERY
    SELECT t.id::text, t.child_key
    FROM jsonb_array_elements(p_children -> 'children') WITH ORDINALITY AS c(child, n)
    JOIN tasks AS t ON t.parent_task_id = p_parent_task_id AND t.child_key = c.child ->> 'child_key'
    WHERE t.project_id::text IS NOT DISTINCT FROM parent_project
    ORDER BY c.n;
END
$$;

CREATE OR REPLACE FUNCTION list_child_tasks(p_parent_task_id text)
RETURNS SETOF tasks LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT c.* FROM tasks AS c
    JOIN tasks AS p ON p.id = p_parent_task_id::tasks_id_t
    WHERE c.parent_task_id = p_parent_task_id AND (c.project_id IS NULL OR p.project_id::text = c.project_id::text)
    ORDER BY c.created_at, c.id;
$$;

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
              AND (c.project_id IS NULL OR p.project_id::text = c.project_id::text)
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

CREATE OR REPLACE FUNCTION cancel_children_of_ended_parents()
RETURNS TABLE (id text, parent_task_id text) LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    UPDATE tasks AS t
    SET status = 'Cancelled', lease_expires_at = NULL, awaiting_children = false,
        error_message = 'parent ' || p.id || ' ended ' || p.status || COALESCE(': ' || left(p.error_message, 500), ''),
        updated_at = now()
    FROM tasks AS p
    WHERE t.parent_task_id = p.id::text AND t.status IN ('Queued', 'In Progress')
      AND p.status IN ('Failed', 'Cancelled') AND (t.project_id IS NULL OR p.project_id::text = t.project_id::text)
    RETURNING t.id::text, t.parent_task_id;
$$;

-- The cascade: a dependency of another project is one that does not exist (its status and error stay its own).
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
                        FROM tasks AS d
                        WHERE d.id = c.dependant_on AND d.status IN ('Failed', 'Cancelled')
                          AND (c.project_id IS NULL OR d.project_id::text = c.project_id::text)),
                       'dependency ' || c.dependant_on || ' does not exist') AS message
            FROM tasks AS c
            WHERE c.status = 'Queued' AND c.blocked_by_dependency
              AND (EXISTS (SELECT 1 FROM tasks AS d
                           WHERE d.id = c.dependant_on AND d.status IN ('Failed', 'Cancelled')
                             AND (c.project_id IS NULL OR d.project_id::text = c.project_id::text))
                   -- a producer may insert a child a moment before its parent: give the parent a minute
                   OR (NOT EXISTS (SELECT 1 FROM tasks AS d WHERE d.id = c.dependant_on
                                   AND (c.project_id IS NULL OR d.project_id::text = c.project_id::text))
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

-- Rows already in the table: a dependency of another project no longer counts as met.
UPDATE tasks AS t SET blocked_by_dependency = true
WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency AND t.dependant_on IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM tasks AS d WHERE d.id = t.dependant_on AND d.status = 'Complete'
                  AND (t.project_id IS NULL OR d.project_id::text = t.project_id::text));

SELECT tasks_add_worker_functions(ARRAY['tasks_check_links']);

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 30;
$$;
