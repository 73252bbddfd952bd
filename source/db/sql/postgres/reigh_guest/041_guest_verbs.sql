-- The TaskStore verbs (source/db/rpc_store.py calls them by these names) over Reigh's own tables. Created with
-- this schema first and Reigh's second on the search_path (SET search_path FROM CURRENT): unqualified table and
-- function names below are Reigh's (tasks, projects, users, task_types, workers, generations, credits_ledger,
-- all_dependencies_complete, get_task_run_type, get_task_model, add_generation_to_shot).

CREATE FUNCTION tasks_schema_version() RETURNS integer LANGUAGE sql IMMUTABLE AS $$ SELECT 41 $$;

CREATE FUNCTION as_uuid(p_text text) RETURNS uuid LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN p_text::uuid;
EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;
END $$;

-- Reigh's trigger prevent_timing_manipulation lets generation_started_at/_processed_at change only under the
-- service role or with application_name claim_task/complete_task, which Reigh's own claim and completion
-- functions set for their transaction (20250113000004, 20250113000005): the guest does the same.
CREATE FUNCTION as_reigh_system(p_function text) RETURNS void LANGUAGE sql VOLATILE AS $$
    SELECT set_config('application_name', p_function, true);
$$;

-- Credits move only through Reigh's ledger, whose trigger updates users.credits, allowed only for the service
-- role (prevent_direct_credit_updates): calculate-task-cost inserts its spend row as the service role.
CREATE FUNCTION as_reigh_service_role() RETURNS void LANGUAGE sql VOLATILE AS $$
    SELECT set_config('request.jwt.claims', '{"role": "service_role"}', true);
$$;

-- The users claim_next_task_service_role serves from the cloud (its _eligible_users): credits above 0, cloud
-- generation not switched off in settings.ui.generationMethods.inCloud, fewer than 5 non-orchestrator rows
-- In Progress across their projects.
CREATE FUNCTION reigh_cloud_users() RETURNS uuid[] LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT COALESCE(array_agg(eligible.id), '{}') FROM (
        SELECT u.id FROM users AS u
          LEFT JOIN projects AS p ON p.user_id = u.id
          LEFT JOIN tasks AS running ON running.project_id = p.id AND running.status = 'In Progress'
                                     AND COALESCE(running.task_type, '') NOT ILIKE '%orchestrator%'
         WHERE u.credits > 0
           AND COALESCE((u.settings -> 'ui' -> 'generationMethods' ->> 'inCloud')::boolean, true)
         GROUP BY u.id HAVING count(running.id) < 5) AS eligible;
$$;

-- Whether a Queued row may be claimed by this worker: Reigh's conditions (every dependency Complete, a
-- run_type 'gpu' task type, a user Reigh serves), a dependency only inside the row's own project, a retry
-- delay passed, and the worker's task types and capabilities (migration 023's rule, on Reigh's model field).
CREATE FUNCTION claimable(t tasks, p_users uuid[], p_runnable_task_types text[], p_task_types text[],
                          p_models text[], p_modelless_task_types text[])
RETURNS boolean LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT all_dependencies_complete(t.dependant_on)
       AND get_task_run_type(t.task_type) = 'gpu'
       AND t.task_type = ANY (p_runnable_task_types)
       AND (SELECT p.user_id FROM projects AS p WHERE p.id = t.project_id) = ANY (p_users)
       AND NOT EXISTS (SELECT 1 FROM unnest(t.dependant_on) AS dep JOIN tasks AS d ON d.id = dep
                        WHERE d.project_id <> t.project_id)
       AND NOT EXISTS (SELECT 1 FROM task_state AS s WHERE s.task_id = t.id AND s.retry_at > now())
       AND CASE WHEN get_task_model(t.params) IS NULL
                THEN p_modelless_task_types IS NULL OR t.task_type = ANY (p_modelless_task_types)
                ELSE (p_task_types IS NULL OR t.task_type = ANY (p_task_types))
                     AND (p_models IS NULL OR get_task_model(t.params) = ANY (p_models)) END;
$$;

CREATE FUNCTION has_claimable_task(p_runnable_task_types text[], p_task_types text[] DEFAULT NULL,
                                   p_models text[] DEFAULT NULL, p_modelless_task_types text[] DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql STABLE SET search_path FROM CURRENT AS $$
DECLARE
    v_users uuid[] := reigh_cloud_users();
BEGIN
    RETURN EXISTS (SELECT 1 FROM tasks AS t WHERE t.status = 'Queued'
                      AND claimable(t, v_users, p_runnable_task_types, p_task_types, p_models, p_modelless_task_types));
END $$;

-- The oldest claimable row, the worker's resident model first unless a claimable row has waited longer than
-- the affinity window (claim_next_task_service_role's starvation rule, with our window). Unlike Reigh's
-- function it locks the row it takes (SKIP LOCKED): two workers never both get it.
CREATE FUNCTION claim_next_task(p_worker_id text, p_lease_seconds double precision, p_runnable_task_types text[],
                                p_resident_model text DEFAULT NULL, p_resident_task_types text[] DEFAULT '{}',
                                p_affinity_window_seconds double precision DEFAULT 120,
                                p_task_types text[] DEFAULT NULL, p_models text[] DEFAULT NULL,
                                p_modelless_task_types text[] DEFAULT NULL)
RETURNS SETOF task_rows LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    v_users uuid[] := reigh_cloud_users();
    v_window interval := make_interval(secs => p_affinity_window_seconds);
    v_starving boolean;
    v_id uuid;
BEGIN
    SELECT EXISTS (SELECT 1 FROM tasks AS t WHERE t.status = 'Queued' AND t.created_at < now() - v_window
                      AND claimable(t, v_users, p_runnable_task_types, p_task_types, p_models, p_modelless_task_types))
      INTO v_starving;
    SELECT t.id INTO v_id FROM tasks AS t
     WHERE t.status = 'Queued'
       AND claimable(t, v_users, p_runnable_task_types, p_task_types, p_models, p_modelless_task_types)
     ORDER BY (NOT v_starving AND p_resident_model IS NOT NULL
               AND get_task_model(t.params) = p_resident_model) DESC, t.created_at, t.id
     LIMIT 1 FOR UPDATE OF t SKIP LOCKED;
    IF v_id IS NULL THEN
        RETURN;
    END IF;
    -- tasks.worker_id references Reigh's workers: the worker's row is there before it holds a task
    INSERT INTO workers (id, instance_type, status) VALUES (p_worker_id, 'wangp', 'active') ON CONFLICT (id) DO NOTHING;
    PERFORM as_reigh_system('claim_task');
    UPDATE tasks SET status = 'In Progress', worker_id = p_worker_id, updated_at = now(),
                     generation_started_at = COALESCE(tasks.generation_started_at, now())  -- as 20260121170000
     WHERE tasks.id = v_id;
    INSERT INTO task_state AS s (task_id, worker_id, attempts, lease_expires_at, heartbeat_at)
    VALUES (v_id, p_worker_id, 1, now() + make_interval(secs => p_lease_seconds), now())
    ON CONFLICT (task_id) DO UPDATE SET worker_id = excluded.worker_id, attempts = s.attempts + 1,
        lease_expires_at = excluded.lease_expires_at, heartbeat_at = now(), retry_at = NULL, progress = NULL,
        progress_phase = NULL, awaiting_children = false, updated_at = now();
    RETURN QUERY SELECT * FROM task_rows AS r WHERE r.task_uuid = v_id;
END $$;

CREATE FUNCTION get_task(p_task_id text) RETURNS SETOF task_rows LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT * FROM task_rows AS r WHERE r.task_uuid = as_uuid(p_task_id);
$$;

CREATE FUNCTION task_status(p_task_id text) RETURNS TABLE (status text, worker_id text)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT t.status::text, t.worker_id FROM tasks AS t WHERE t.id = as_uuid(p_task_id);
$$;

CREATE FUNCTION holds(p_task_id uuid, p_worker_id text) RETURNS boolean LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT EXISTS (SELECT 1 FROM tasks AS t JOIN task_state AS s ON s.task_id = t.id
                    WHERE t.id = p_task_id AND t.status = 'In Progress' AND t.worker_id = p_worker_id
                      AND s.worker_id = p_worker_id);
$$;

CREATE FUNCTION heartbeat_task(p_task_id text, p_worker_id text, p_lease_seconds double precision,
                               p_progress double precision DEFAULT NULL, p_phase text DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH beat AS (
        UPDATE task_state AS s
           SET lease_expires_at = now() + make_interval(secs => p_lease_seconds), heartbeat_at = now(),
               progress = COALESCE(p_progress, s.progress), progress_phase = COALESCE(p_phase, s.progress_phase),
               updated_at = now()
         WHERE s.task_id = as_uuid(p_task_id) AND NOT s.awaiting_children AND holds(s.task_id, p_worker_id)
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM beat);
$$;

-- ----------------------------------------------------------------------------------------------------------
-- What Reigh's complete-task and calculate-task-cost do after a row completes, in SQL over the same tables.

-- getSubTaskOrchestratorId (_shared/billing.ts): the orchestrator a row belongs to, by the four param paths.
CREATE FUNCTION reigh_orchestrator_of(p_params jsonb, p_task_id uuid) RETURNS uuid
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN ref ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                     AND ref::uuid <> p_task_id THEN ref::uuid END
      FROM (SELECT COALESCE(p_params ->> 'orchestrator_task_id_ref',
                            p_params -> 'orchestrator_details' ->> 'orchestrator_task_id',
                            p_params -> 'originalParams' -> 'orchestrator_details' ->> 'orchestrator_task_id',
                            p_params ->> 'orchestrator_task_id') AS ref) AS r;
$$;

-- calculate-task-cost: a sub-task is not billed (its orchestrator is, for the sum of its completed sub-tasks'
-- seconds); a row is billed once (its 'spend' ledger entry); per_second or per_unit, then the cost factors.
CREATE FUNCTION reigh_bill_task(p_task_id uuid) RETURNS numeric LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    v_task tasks;
    v_type task_types;
    v_owner uuid;
    v_seconds numeric;
    v_cost numeric;
BEGIN
    SELECT * INTO v_task FROM tasks AS t WHERE t.id = p_task_id;
    IF v_task.generation_started_at IS NULL OR v_task.generation_processed_at IS NULL
       OR reigh_orchestrator_of(v_task.params, v_task.id) IS NOT NULL
       OR EXISTS (SELECT 1 FROM credits_ledger AS l WHERE l.task_id = p_task_id AND l.type = 'spend') THEN
        RETURN NULL;
    END IF;
    SELECT p.user_id INTO v_owner FROM projects AS p WHERE p.id = v_task.project_id;
    SELECT sum(greatest(1, ceil(extract(epoch FROM c.generation_processed_at - c.generation_started_at))))
      INTO v_seconds FROM tasks AS c
     WHERE c.status = 'Complete' AND reigh_orchestrator_of(c.params, c.id) = p_task_id
       AND c.generation_started_at IS NOT NULL AND c.generation_processed_at IS NOT NULL;
    v_seconds := COALESCE(v_seconds, greatest(1, ceil(extract(epoch FROM v_task.generation_processed_at
                                                                          - v_task.generation_started_at))));
    SELECT * INTO v_type FROM task_types AS tt WHERE tt.name = v_task.task_type AND tt.is_active;
    IF v_type.id IS NULL THEN
        v_cost := 0.0278 * v_seconds;  -- its default rate when the type has no active configuration
    ELSIF v_type.billing_type = 'per_unit' THEN
        v_cost := COALESCE(v_type.unit_cost, 0);
    ELSE
        v_cost := v_type.base_cost_per_second * v_seconds;
    END IF;
    IF v_type.cost_factors IS NOT NULL THEN
        v_cost := v_cost * COALESCE((v_type.cost_factors -> 'resolution' ->> (v_task.params ->> 'resolution'))::numeric, 1);
        IF (v_type.cost_factors ->> 'frameCount') IS NOT NULL AND (v_task.params ->> 'frame_count') IS NOT NULL THEN
            v_cost := v_cost + (v_type.cost_factors ->> 'frameCount')::numeric * (v_task.params ->> 'frame_count')::numeric
                               * CASE WHEN v_type.billing_type = 'per_unit' THEN 1 ELSE v_seconds END;
        END IF;
        v_cost := v_cost * COALESCE((v_type.cost_factors -> 'modelType' ->> (v_task.params ->> 'model_type'))::numeric, 1);
    END IF;
    v_cost := round(v_cost, 3);
    PERFORM as_reigh_service_role();
    INSERT INTO credits_ledger (user_id, task_id, amount, type, metadata)
    VALUES (v_owner, p_task_id, -v_cost, 'spend',
            jsonb_build_object('task_type', v_task.task_type, 'duration_seconds', v_seconds,
                               'billing_type', COALESCE(v_type.billing_type, 'per_second'),
                               'calculated_at', now(), 'billed_by', 'wangp-worker'));
    RETURN v_cost;
END $$;

-- complete-task's gallery effects: a generations row with its primary 'original' variant (a segment of an
-- orchestrator: a child generation, in segment order, under its orchestrator's generation once that exists),
-- the shot placement through Reigh's add_generation_to_shot, and tasks.generation_created.
CREATE FUNCTION reigh_record_generation(p_task_id uuid) RETURNS uuid LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    v_task tasks;
    v_type text;
    v_parent uuid;
    v_parent_generation uuid;
    v_shot uuid;
    v_generation uuid := gen_random_uuid();
    v_variant uuid;
    v_segment integer;
BEGIN
    SELECT * INTO v_task FROM tasks AS t WHERE t.id = p_task_id;
    IF v_task.output_location IS NULL OR v_task.generation_created THEN
        RETURN NULL;
    END IF;
    v_type := COALESCE((SELECT tt.content_type FROM task_types AS tt WHERE tt.name = v_task.task_type), 'image');
    v_parent := reigh_orchestrator_of(v_task.params, v_task.id);
    v_segment := CASE WHEN (v_task.params ->> 'segment_index') ~ '^\d+$' THEN (v_task.params ->> 'segment_index')::integer END;
    IF v_parent IS NOT NULL AND v_segment IS NULL THEN
        RETURN NULL;  -- a sub-task that is not a segment (the stitch): its output is its orchestrator's
    END IF;
    IF v_parent IS NOT NULL THEN
        SELECT g.id INTO v_parent_generation FROM generations AS g WHERE g.tasks ? v_parent::text AND NOT g.is_child LIMIT 1;
    END IF;
    INSERT INTO generations (id, tasks, params, location, type, project_id, name, is_child, child_order,
                             parent_generation_id)
    VALUES (v_generation, jsonb_build_array(p_task_id::text), v_task.params, v_task.output_location, v_type,
            v_task.project_id,
            COALESCE(v_task.params ->> 'generation_name', v_task.params -> 'orchestrator_details' ->> 'generation_name'),
            v_parent IS NOT NULL, v_segment, v_parent_generation);
    INSERT INTO generation_variants (generation_id, project_id, location, params, is_primary, variant_type)
    VALUES (v_generation, v_task.project_id, v_task.output_location,
            v_task.params || jsonb_build_object('source_task_id', p_task_id, 'created_from', 'generation_original'),
            true, 'original')
    RETURNING id INTO v_variant;
    UPDATE generations SET primary_variant_id = v_variant WHERE id = v_generation;
    IF v_parent IS NULL THEN
        -- the orchestrator's segments made before it completed join it now
        UPDATE generations AS g SET parent_generation_id = v_generation
         WHERE g.is_child AND g.parent_generation_id IS NULL AND g.project_id = v_task.project_id
           AND EXISTS (SELECT 1 FROM tasks AS c WHERE g.tasks ? c.id::text
                          AND reigh_orchestrator_of(c.params, c.id) = p_task_id);
        v_shot := as_uuid(COALESCE(v_task.params ->> 'shot_id', v_task.params -> 'orchestrator_details' ->> 'shot_id'));
        IF v_shot IS NOT NULL AND EXISTS (SELECT 1 FROM shots AS s WHERE s.id = v_shot AND s.project_id = v_task.project_id) THEN
            PERFORM add_generation_to_shot(v_shot, v_generation, COALESCE((v_task.params ->> 'add_in_position')::boolean, true));
        END IF;
    END IF;
    UPDATE tasks SET generation_created = true WHERE id = p_task_id;
    RETURN v_generation;
END $$;

CREATE FUNCTION reigh_task_completed(p_task_id uuid) RETURNS void LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    SELECT reigh_record_generation(p_task_id);
    SELECT reigh_bill_task(p_task_id);
$$;

CREATE FUNCTION complete_task(p_task_id text, p_worker_id text, p_output_location text, p_result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    v_id uuid := as_uuid(p_task_id);
BEGIN
    IF NOT holds(v_id, p_worker_id) THEN
        RETURN false;
    END IF;
    PERFORM as_reigh_system('complete_task');
    UPDATE tasks SET status = 'Complete', output_location = p_output_location, error_message = NULL,
                     updated_at = now(), generation_processed_at = now()
     WHERE id = v_id;
    UPDATE task_state SET lease_expires_at = NULL, progress = 1.0, result = COALESCE(p_result, result), updated_at = now()
     WHERE task_id = v_id;
    PERFORM reigh_task_completed(v_id);
    RETURN true;
END $$;

CREATE FUNCTION fail_task(p_task_id text, p_worker_id text, p_error_message text, p_result jsonb DEFAULT NULL,
                          p_output_location text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    v_id uuid := as_uuid(p_task_id);
BEGIN
    IF NOT holds(v_id, p_worker_id) THEN
        RETURN false;
    END IF;
    UPDATE tasks SET status = 'Failed', error_message = p_error_message, updated_at = now(),
                     output_location = COALESCE(p_output_location, output_location)
     WHERE id = v_id;
    UPDATE task_state SET lease_expires_at = NULL, awaiting_children = false, result = COALESCE(p_result, result),
                          updated_at = now()
     WHERE task_id = v_id;
    RETURN true;
END $$;

-- Queued again for any worker (its start time cleared: the wait is not billed); this guest's claim waits out
-- retry_at, a worker using Reigh's own claim does not know it.
CREATE FUNCTION requeue(p_task_id uuid, p_error_message text, p_retry_at timestamptz) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM as_reigh_system('claim_task');
    UPDATE tasks SET status = 'Queued', worker_id = NULL, generation_started_at = NULL, updated_at = now(),
                     error_message = p_error_message
     WHERE id = p_task_id;
    UPDATE task_state SET worker_id = NULL, lease_expires_at = NULL, retry_at = p_retry_at, progress = NULL,
                          progress_phase = NULL, updated_at = now()
     WHERE task_id = p_task_id;
END $$;

CREATE FUNCTION retry_later(p_task_id text, p_worker_id text, p_error_message text, p_delay_seconds double precision,
                            p_error_in_output_location boolean DEFAULT false)
RETURNS TABLE (status text) LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    v_id uuid := as_uuid(p_task_id);
    v_state task_state;
BEGIN
    IF NOT holds(v_id, p_worker_id) THEN
        RETURN;
    END IF;
    SELECT * INTO v_state FROM task_state AS s WHERE s.task_id = v_id;
    IF v_state.attempts >= v_state.max_attempts THEN
        UPDATE tasks SET status = 'Failed', updated_at = now(),
                         error_message = p_error_message || ' (attempt ' || v_state.attempts || ' of ' || v_state.max_attempts || ')',
                         output_location = CASE WHEN p_error_in_output_location THEN p_error_message ELSE output_location END
         WHERE id = v_id;
        UPDATE task_state SET lease_expires_at = NULL, updated_at = now() WHERE task_id = v_id;
        RETURN QUERY SELECT 'Failed'::text;
    ELSE
        PERFORM requeue(v_id, p_error_message, now() + make_interval(secs => p_delay_seconds));
        RETURN QUERY SELECT 'Queued'::text;
    END IF;
END $$;

CREATE FUNCTION requeue_task_on_shutdown(p_task_id text, p_worker_id text, p_free_requeues integer DEFAULT 3)
RETURNS boolean LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    v_id uuid := as_uuid(p_task_id);
    v_state task_state;
BEGIN
    IF NOT holds(v_id, p_worker_id) THEN
        RETURN false;
    END IF;
    SELECT * INTO v_state FROM task_state AS s WHERE s.task_id = v_id;
    IF v_state.shutdown_requeues >= p_free_requeues AND v_state.attempts >= v_state.max_attempts THEN
        UPDATE tasks SET status = 'Failed', updated_at = now(),
                         error_message = 'interrupted by a worker shutdown ' || (v_state.shutdown_requeues + 1)
                                         || ' times; its attempts are used up'
         WHERE id = v_id;
        UPDATE task_state SET lease_expires_at = NULL, updated_at = now() WHERE task_id = v_id;
    ELSE
        PERFORM requeue(v_id, NULL, NULL);
        UPDATE task_state SET shutdown_requeues = shutdown_requeues + 1,
                              attempts = CASE WHEN shutdown_requeues < p_free_requeues THEN attempts - 1 ELSE attempts END
         WHERE task_id = v_id;
    END IF;
    RETURN true;
END $$;

-- A guest worker that died: its rows come back once their lease passes (Failed once their attempts are used).
CREATE FUNCTION reclaim_expired_leases() RETURNS TABLE (id text, status text, attempts integer)
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    v_row record;
BEGIN
    FOR v_row IN
        SELECT t.id AS task_id, s.attempts AS used, s.max_attempts FROM task_state AS s JOIN tasks AS t ON t.id = s.task_id
         WHERE s.lease_expires_at < now() AND NOT s.awaiting_children AND t.status = 'In Progress'
           AND t.worker_id = s.worker_id
           FOR UPDATE OF t SKIP LOCKED
    LOOP
        IF v_row.used >= v_row.max_attempts THEN
            UPDATE tasks SET status = 'Failed', updated_at = now(),
                             error_message = 'its worker stopped heartbeating ' || v_row.used || ' times (lease expired); attempts used up'
             WHERE tasks.id = v_row.task_id;
            UPDATE task_state SET lease_expires_at = NULL, updated_at = now() WHERE task_id = v_row.task_id;
            RETURN QUERY SELECT v_row.task_id::text, 'Failed'::text, v_row.used;
        ELSE
            PERFORM requeue(v_row.task_id, NULL, NULL);
            RETURN QUERY SELECT v_row.task_id::text, 'Queued'::text, v_row.used;
        END IF;
    END LOOP;
END $$;

-- The failure cascade, until nothing changes. dependency: a Queued row waits for all of its dependant_on, so
-- one that ended Failed/Cancelled fails it. child: a parked orchestrator fails with its first ended child.
-- parent: the unfinished children of a Failed/Cancelled orchestrator are cancelled.
CREATE FUNCTION fail_orphaned_dependants() RETURNS TABLE (id text, dependant_on text, kind text)
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    v_dependants integer;
    v_parents integer;
    v_children integer;
BEGIN
    LOOP
        RETURN QUERY
        WITH doomed AS (
            SELECT t.id AS task_id, cause.id AS cause_id,
                   'dependency ' || cause.id || ' ended ' || cause.status
                   || COALESCE(': ' || left(cause.error_message, 500), '') AS message
              FROM tasks AS t
              CROSS JOIN LATERAL (SELECT d.id, d.status, d.error_message FROM unnest(t.dependant_on) AS dep
                                    JOIN tasks AS d ON d.id = dep
                                   WHERE d.status IN ('Failed', 'Cancelled') ORDER BY d.updated_at NULLS LAST LIMIT 1) AS cause
             WHERE t.status = 'Queued' AND t.dependant_on IS NOT NULL
             FOR UPDATE OF t SKIP LOCKED)
        UPDATE tasks AS t SET status = 'Failed', error_message = doomed.message, updated_at = now()
          FROM doomed WHERE t.id = doomed.task_id
        RETURNING t.id::text, doomed.cause_id::text, 'dependency'::text;
        GET DIAGNOSTICS v_dependants = ROW_COUNT;

        RETURN QUERY
        WITH doomed AS (
            SELECT DISTINCT ON (s.task_id) s.task_id, c.id AS cause_id,
                   'child ' || c.id || ' ended ' || c.status || COALESCE(': ' || left(c.error_message, 500), '') AS message
              FROM task_state AS s JOIN tasks AS p ON p.id = s.task_id
              JOIN task_state AS cs ON cs.parent_task_id = s.task_id JOIN tasks AS c ON c.id = cs.task_id
             WHERE s.awaiting_children AND p.status = 'In Progress' AND c.status IN ('Failed', 'Cancelled')
             ORDER BY s.task_id, c.updated_at NULLS LAST)
        UPDATE tasks AS t SET status = 'Failed', error_message = doomed.message, updated_at = now()
          FROM doomed WHERE t.id = doomed.task_id
        RETURNING t.id::text, doomed.cause_id::text, 'child'::text;
        GET DIAGNOSTICS v_parents = ROW_COUNT;
        UPDATE task_state AS s SET awaiting_children = false FROM tasks AS t
         WHERE t.id = s.task_id AND s.awaiting_children AND t.status = 'Failed';

        RETURN QUERY
        WITH doomed AS (
            SELECT c.id AS task_id, p.id AS cause_id,
                   'parent ' || p.id || ' ended ' || p.status || COALESCE(': ' || left(p.error_message, 500), '') AS message
              FROM task_state AS cs JOIN tasks AS c ON c.id = cs.task_id JOIN tasks AS p ON p.id = cs.parent_task_id
             WHERE c.status IN ('Queued', 'In Progress') AND p.status IN ('Failed', 'Cancelled')
             FOR UPDATE OF c SKIP LOCKED)
        UPDATE tasks AS t SET status = 'Cancelled', error_message = doomed.message, updated_at = now()
          FROM doomed WHERE t.id = doomed.task_id
        RETURNING t.id::text, doomed.cause_id::text, 'parent'::text;
        GET DIAGNOSTICS v_children = ROW_COUNT;
        EXIT WHEN v_dependants + v_parents + v_children = 0;
    END LOOP;
END $$;

-- Rows no worker could ever run, failed with the reason: a dependency that does not exist, or one in another
-- project (links between rows hold only inside one project). Only gpu-run rows: API rows are Reigh's own.
CREATE FUNCTION fail_unrunnable_tasks() RETURNS TABLE (id text, reason text)
LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH doomed AS (
        SELECT t.id AS task_id,
               CASE WHEN d.id IS NULL THEN 'dependency ' || dep || ' does not exist'
                    ELSE 'dependency ' || dep || ' belongs to another project' END AS message
          FROM tasks AS t CROSS JOIN LATERAL unnest(t.dependant_on) AS dep LEFT JOIN tasks AS d ON d.id = dep
         WHERE t.status = 'Queued' AND get_task_run_type(t.task_type) = 'gpu'
           AND (d.id IS NULL OR d.project_id <> t.project_id)),
    one AS (SELECT DISTINCT ON (task_id) task_id, message FROM doomed ORDER BY task_id, message)
    UPDATE tasks AS t SET status = 'Failed', error_message = one.message, updated_at = now()
      FROM one WHERE t.id = one.task_id AND t.status = 'Queued'
    RETURNING t.id::text, one.message;
$$;

CREATE FUNCTION tasks_housekeeping_turn(p_job text, p_interval_seconds double precision, p_worker_id text)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH turn AS (
        INSERT INTO housekeeping_turns AS h (job, last_at, worker_id) VALUES (p_job, now(), p_worker_id)
        ON CONFLICT (job) DO UPDATE SET last_at = now(), worker_id = excluded.worker_id
         WHERE h.last_at <= now() - make_interval(secs => p_interval_seconds)
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM turn);
$$;

CREATE FUNCTION tasks_errors_to_output_location(p_task_ids text[]) RETURNS integer
LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH changed AS (
        UPDATE tasks AS t SET output_location = t.error_message
         WHERE t.id = ANY (SELECT as_uuid(x) FROM unnest(p_task_ids) AS x) AND t.status = 'Failed'
           AND t.error_message IS NOT NULL AND t.output_location IS DISTINCT FROM t.error_message
        RETURNING 1)
    SELECT count(*)::integer FROM changed;
$$;

-- ----------------------------------------------------------------------------------------------------------
-- Orchestration: children are Reigh rows in the parent's project, their params naming the parent the way
-- Reigh's own sub-tasks do (orchestrator_task_id_ref: its billing and cancel trigger find them by it) and
-- carrying the parent's parent_generation_id (a shot's, which travelBetweenImages puts at the top level and in
-- orchestrator_details): complete-task files the segments under it and the stitch as its variant.
CREATE FUNCTION add_child_tasks(p_parent_task_id text, p_children jsonb) RETURNS TABLE (id text)
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    v_parent tasks;
    v_child jsonb;
    v_id uuid;
BEGIN
    SELECT * INTO v_parent FROM tasks AS t WHERE t.id = as_uuid(p_parent_task_id);
    IF v_parent.id IS NULL THEN
        RAISE EXCEPTION 'parent task % does not exist', p_parent_task_id;
    END IF;
    FOR v_child IN SELECT c FROM jsonb_array_elements(p_children -> 'children') AS c LOOP
        IF (v_child ->> 'project_id') IS NOT NULL AND as_uuid(v_child ->> 'project_id') IS DISTINCT FROM v_parent.project_id THEN
            RAISE EXCEPTION 'child % names another project than its parent', v_child ->> 'child_key';
        END IF;
        v_id := as_uuid(v_child ->> 'id');
        INSERT INTO tasks (id, task_type, params, project_id, dependant_on)
        VALUES (v_id, v_child ->> 'task_type',
                jsonb_strip_nulls(jsonb_build_object(
                    'orchestrator_task_id_ref', v_parent.id::text,
                    'parent_generation_id', COALESCE(v_parent.params ->> 'parent_generation_id',
                                                     v_parent.params -> 'orchestrator_details' ->> 'parent_generation_id')))
                || COALESCE(v_child -> 'params', '{}'),
                v_parent.project_id,
                CASE WHEN v_child ->> 'dependant_on' IS NOT NULL THEN ARRAY[as_uuid(v_child ->> 'dependant_on')] END)
        ON CONFLICT DO NOTHING;
        INSERT INTO task_state (task_id, parent_task_id, child_key, max_attempts)
        VALUES (v_id, v_parent.id, v_child ->> 'child_key', COALESCE((v_child ->> 'max_attempts')::integer, 3))
        ON CONFLICT DO NOTHING;
        RETURN QUERY SELECT s.task_id::text FROM task_state AS s
                      WHERE s.parent_task_id = v_parent.id AND s.child_key = v_child ->> 'child_key';
    END LOOP;
END $$;

CREATE FUNCTION list_child_tasks(p_parent_task_id text) RETURNS SETOF task_rows
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT r.* FROM task_rows AS r WHERE r.parent_task_id = p_parent_task_id ORDER BY r.created_at, r.id;
$$;

CREATE FUNCTION park_awaiting_children(p_task_id text, p_worker_id text, p_result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    IF NOT holds(as_uuid(p_task_id), p_worker_id) THEN
        RETURN false;
    END IF;
    -- stays In Progress in Reigh's eyes (its orchestrators do), leaseless here until a child completes it
    UPDATE task_state SET awaiting_children = true, lease_expires_at = NULL, result = COALESCE(p_result, result),
                          updated_at = now()
     WHERE task_id = as_uuid(p_task_id);
    RETURN true;
END $$;

CREATE FUNCTION complete_parent(p_task_id text, p_output_location text, p_result jsonb DEFAULT '{}')
RETURNS boolean LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    v_id uuid := as_uuid(p_task_id);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM tasks AS t JOIN task_state AS s ON s.task_id = t.id
                    WHERE t.id = v_id AND t.status = 'In Progress' AND s.awaiting_children FOR UPDATE OF t) THEN
        RETURN false;
    END IF;
    PERFORM as_reigh_system('complete_task');
    UPDATE tasks SET status = 'Complete', output_location = p_output_location, error_message = NULL,
                     updated_at = now(), generation_processed_at = now()
     WHERE id = v_id;
    UPDATE task_state SET awaiting_children = false, progress = 1.0,
                          result = COALESCE(result, '{}') || COALESCE(p_result, '{}'), updated_at = now()
     WHERE task_id = v_id;
    PERFORM reigh_task_completed(v_id);
    RETURN true;
END $$;

-- ----------------------------------------------------------------------------------------------------------
-- The worker in Reigh's own workers table: its row (instance_type 'wangp'), current_model (what Reigh's
-- affinity reads), last_heartbeat, status in Reigh's values, the rest of what it reports under metadata.wangp.
CREATE FUNCTION register_worker(p_id text, p_host text DEFAULT NULL, p_pid integer DEFAULT NULL,
                                p_gpu_name text DEFAULT NULL, p_gpu_memory_gb double precision DEFAULT NULL,
                                p_capabilities jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    INSERT INTO workers AS w (id, instance_type, status, last_heartbeat, current_model, metadata)
    VALUES (p_id, 'wangp', 'active', now(), NULL,
            jsonb_build_object('wangp', jsonb_build_object('host', p_host, 'pid', p_pid, 'gpu_name', p_gpu_name,
                               'gpu_memory_gb', p_gpu_memory_gb, 'capabilities', p_capabilities, 'started_at', now())))
    ON CONFLICT (id) DO UPDATE SET status = 'active', last_heartbeat = now(), current_model = NULL,
        metadata = COALESCE(w.metadata, '{}') || excluded.metadata
     WHERE w.instance_type = 'wangp';
    SELECT true;
$$;

CREATE FUNCTION touch_worker(p_id text, p_resident_model text DEFAULT NULL, p_current_task_id text DEFAULT NULL,
                             p_status text DEFAULT 'running', p_stats jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    UPDATE workers AS w
       SET current_model = p_resident_model, last_heartbeat = now(),
           status = CASE WHEN p_status = 'stopped' THEN 'inactive' ELSE 'active' END,
           metadata = jsonb_set(COALESCE(w.metadata, '{}'), '{wangp}',
                                COALESCE(w.metadata -> 'wangp', '{}') || jsonb_build_object(
                                    'current_task_id', p_current_task_id, 'status', p_status)
                                || CASE WHEN p_stats IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('stats', p_stats) END)
     WHERE w.id = p_id AND w.instance_type = 'wangp'
    RETURNING true;
$$;

CREATE FUNCTION list_workers(p_alive_within_seconds double precision)
RETURNS TABLE (id text, host text, pid integer, gpu_name text, gpu_memory_gb double precision, resident_model text,
               current_task_id text, status text, started_at timestamptz, last_heartbeat timestamptz, alive boolean,
               stats jsonb, capabilities jsonb)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT w.id, m ->> 'host', (m ->> 'pid')::integer, m ->> 'gpu_name', (m ->> 'gpu_memory_gb')::double precision,
           w.current_model, m ->> 'current_task_id', COALESCE(m ->> 'status', w.status),
           COALESCE((m ->> 'started_at')::timestamptz, w.created_at), w.last_heartbeat,
           w.status = 'active' AND w.last_heartbeat >= now() - make_interval(secs => p_alive_within_seconds),
           m -> 'stats', m -> 'capabilities'
      FROM workers AS w CROSS JOIN LATERAL (SELECT COALESCE(w.metadata -> 'wangp', '{}') AS m) AS meta
     WHERE w.instance_type = 'wangp'
     ORDER BY 9 DESC;
$$;

-- Nothing here is callable by Reigh's browser roles (the schema grants them no USAGE either).
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA %I FROM PUBLIC', current_schema());
END
$$;
