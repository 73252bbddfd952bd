-- A compact Reigh-shaped database, written by us from the facts in banodoco/reigh-app's supabase/migrations
-- (at 3a6fd3d, 2026-04-11) and its generated src/integrations/supabase/types.ts. Not a copy: only the tables,
-- columns, triggers, policies and functions whose behaviour this worker meets, in their final state.
-- Loaded into one fresh schema per test (first on search_path); Supabase's roles and auth.uid()/auth.role()
-- come from tests/reigh/conftest.py. Which Reigh migration each fact comes from is named beside it.

-- 20250100000000_create_base_schema + 'Cancelled' added later
CREATE TYPE task_status AS ENUM ('Queued', 'In Progress', 'Complete', 'Failed', 'Cancelled');
-- 20250113000000_add_credits_system (+ 'auto_topup' in 20250113000010)
CREATE TYPE credit_ledger_type AS ENUM ('stripe', 'manual', 'spend', 'refund', 'auto_topup');

CREATE TABLE users (
    id uuid PRIMARY KEY,
    name text,
    email text,
    credits numeric(10, 3) NOT NULL DEFAULT 0,
    given_credits boolean NOT NULL DEFAULT false,
    settings jsonb DEFAULT '{}'::jsonb,          -- settings.ui.generationMethods.inCloud gates cloud claims
    api_keys jsonb
);

CREATE TABLE projects (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    aspect_ratio text,
    settings jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- 20250203200000_create_task_types_with_run_type (+ billing_type/unit_cost, tool_type later)
CREATE TABLE task_types (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL UNIQUE,
    run_type text NOT NULL DEFAULT 'gpu' CONSTRAINT check_run_type CHECK (run_type IN ('gpu', 'api')),
    category text NOT NULL,
    display_name text NOT NULL,
    description text,
    billing_type text NOT NULL DEFAULT 'per_second' CHECK (billing_type IN ('per_second', 'per_unit')),
    base_cost_per_second numeric(10, 6) NOT NULL DEFAULT 0,
    unit_cost numeric(10, 6),
    cost_factors jsonb DEFAULT '{}'::jsonb,
    content_type text CONSTRAINT check_content_type CHECK (content_type IN ('image', 'video')),  -- 20250927000000
    variant_type text,  -- 20260204191820: the label of the variant a task type makes (NULL: a new generation)
    is_active boolean DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- 20250705000001_create_workers_table (+ current_model, 20251222000000_add_worker_model_affinity)
CREATE TABLE workers (
    id text PRIMARY KEY,
    instance_type text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive', 'terminated')),
    metadata jsonb DEFAULT '{}'::jsonb,
    current_model text
);

CREATE TABLE tasks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_type text NOT NULL CONSTRAINT tasks_task_type_fkey REFERENCES task_types (name),  -- 20260213000000
    params jsonb NOT NULL,
    status task_status NOT NULL DEFAULT 'Queued',
    dependant_on uuid[],                      -- 20260121000000_support_multiple_dependencies: wait for all
    output_location text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz,
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    generation_started_at timestamptz,
    generation_processed_at timestamptz,
    worker_id text REFERENCES workers (id) ON DELETE SET NULL,
    attempts integer NOT NULL DEFAULT 0,
    error_message text,
    result_data jsonb DEFAULT '{}'::jsonb,
    generation_created boolean NOT NULL DEFAULT false,
    copied_from_share text,
    idempotency_key text
);
CREATE INDEX idx_tasks_dependant_on ON tasks USING gin (dependant_on) WHERE dependant_on IS NOT NULL;

-- 20250711000001 + 20250713000008: plain tokens, unique, looked up by .eq("token", token)
CREATE TABLE user_api_tokens (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token text NOT NULL,
    label text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX idx_user_api_tokens_token ON user_api_tokens (token);

CREATE TABLE credits_ledger (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    task_id uuid REFERENCES tasks (id) ON DELETE SET NULL,
    amount numeric(10, 3) NOT NULL,
    type credit_ledger_type NOT NULL,
    metadata jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shots (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    position integer NOT NULL DEFAULT 0,
    settings jsonb,
    aspect_ratio text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz
);

CREATE TABLE generations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tasks jsonb,                               -- the ids of the tasks that made it
    params jsonb,
    location text,
    type text,                                 -- 'video' | 'image'
    thumbnail_url text,
    name text,
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    based_on uuid,
    parent_generation_id uuid REFERENCES generations (id) ON DELETE CASCADE,
    is_child boolean NOT NULL DEFAULT false,
    child_order integer,
    primary_variant_id uuid,
    pair_shot_generation_id uuid,
    shot_data jsonb,
    starred boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz
);

CREATE TABLE generation_variants (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    generation_id uuid NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
    project_id uuid REFERENCES projects (id) ON DELETE CASCADE,
    location text NOT NULL,
    thumbnail_url text,
    params jsonb,
    is_primary boolean NOT NULL DEFAULT false,
    variant_type text,
    name text,
    starred boolean NOT NULL DEFAULT false,
    viewed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shot_generations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    shot_id uuid NOT NULL REFERENCES shots (id) ON DELETE CASCADE,
    generation_id uuid NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
    timeline_frame integer,
    metadata jsonb,
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------------------------------
-- Credits: the ledger is the only way to move credits (20260213100000_remove_credit_trigger_bypass)
CREATE FUNCTION refresh_user_balance() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    UPDATE users SET credits = (SELECT COALESCE(sum(amount), 0) FROM credits_ledger
                                WHERE user_id = COALESCE(NEW.user_id, OLD.user_id))
     WHERE id = COALESCE(NEW.user_id, OLD.user_id);
    RETURN COALESCE(NEW, OLD);
END $$;
CREATE TRIGGER credits_ledger_after_insert AFTER INSERT ON credits_ledger
    FOR EACH ROW EXECUTE FUNCTION refresh_user_balance();

CREATE FUNCTION prevent_direct_credit_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF auth.role() = 'service_role' THEN RETURN NEW; END IF;
    IF OLD.credits IS DISTINCT FROM NEW.credits THEN
        RAISE EXCEPTION 'Direct credit updates are not allowed. Use the credits_ledger table.';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER prevent_direct_credit_updates_trigger BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION prevent_direct_credit_updates();

-- Timing fields (20250113000003_protect_timing_fields; SECURITY DEFINER removed in 20250910220011)
CREATE FUNCTION prevent_timing_manipulation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF auth.role() = 'service_role' THEN RETURN NEW; END IF;
    IF current_setting('application_name', true) IN ('claim_task', 'complete_task') THEN RETURN NEW; END IF;
    IF TG_OP = 'UPDATE' AND (OLD.generation_started_at IS DISTINCT FROM NEW.generation_started_at
                             OR OLD.generation_processed_at IS DISTINCT FROM NEW.generation_processed_at) THEN
        RAISE EXCEPTION 'Timing fields can only be modified by system functions';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER prevent_timing_manipulation_trigger BEFORE UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION prevent_timing_manipulation();

-- Billing a cancelled orchestrator (20260112140000 + 20260112153000): give it timestamps from its completed
-- children, then POST calculate-task-cost with http_post when app.supabase_url / app.service_role_key are set
-- (here they never are, as on a database without them: Reigh logs and returns).
CREATE FUNCTION bill_cancelled_orchestrator() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    orchestrator_ref text;
    is_orchestrator boolean;
    earliest_child_start timestamptz;
BEGIN
    IF NEW.status = 'Cancelled' AND OLD.status <> 'Cancelled' THEN
        orchestrator_ref := COALESCE(NEW.params ->> 'orchestrator_task_id_ref',
                                     NEW.params -> 'orchestrator_details' ->> 'orchestrator_task_id',
                                     NEW.params -> 'originalParams' -> 'orchestrator_details' ->> 'orchestrator_task_id',
                                     NEW.params ->> 'orchestrator_task_id');
        is_orchestrator := NEW.params -> 'orchestrator_details' IS NOT NULL AND (
            orchestrator_ref IS NULL
            OR orchestrator_ref !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
            OR orchestrator_ref = NEW.id::text);
        IF NOT is_orchestrator THEN RETURN NEW; END IF;
        SELECT min(t.generation_started_at) INTO earliest_child_start FROM tasks t
         WHERE t.status = 'Complete'
           AND (t.params ->> 'orchestrator_task_id_ref' = NEW.id::text
                OR t.params -> 'orchestrator_details' ->> 'orchestrator_task_id' = NEW.id::text
                OR t.params ->> 'orchestrator_task_id' = NEW.id::text);
        IF earliest_child_start IS NULL THEN
            RAISE LOG 'Orchestrator % cancelled with no completed children, skipping billing', NEW.id;
            RETURN NEW;
        END IF;
        UPDATE tasks SET generation_started_at = COALESCE(tasks.generation_started_at, earliest_child_start, now()),
                         generation_processed_at = COALESCE(tasks.generation_processed_at, now())
         WHERE id = NEW.id;
        IF current_setting('app.supabase_url', true) IS NULL OR current_setting('app.service_role_key', true) IS NULL THEN
            RAISE LOG 'Supabase configuration not available for orchestrator billing trigger';
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER trigger_bill_cancelled_orchestrator AFTER UPDATE OF status ON tasks FOR EACH ROW
    WHEN (NEW.status = 'Cancelled' AND OLD.status IS DISTINCT FROM 'Cancelled')
    EXECUTE FUNCTION bill_cancelled_orchestrator();

-- ---------------------------------------------------------------------------------------------------------
-- Claim helpers and claim functions (final forms: 20260121000000, 20260212000000, 20260323213000)
CREATE FUNCTION all_dependencies_complete(p_dependant_on uuid[]) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT p_dependant_on IS NULL OR cardinality(p_dependant_on) = 0 OR NOT EXISTS (
        SELECT 1 FROM unnest(p_dependant_on) AS dep_id
         WHERE NOT EXISTS (SELECT 1 FROM tasks dep WHERE dep.id = dep_id AND dep.status = 'Complete'))
$$;

CREATE FUNCTION get_task_run_type(p_task_type text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT run_type FROM task_types WHERE name = p_task_type AND is_active = true
$$;

CREATE FUNCTION get_task_model(p_params jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(p_params ->> 'model_name', p_params -> 'orchestrator_details' ->> 'model_name', p_params ->> 'model')
$$;

-- Users Reigh serves from the cloud: credits > 0, cloud generation not switched off, fewer than 5 non-orchestrator
-- tasks In Progress. The claim takes the oldest eligible Queued row, preferring the worker's current model.
CREATE FUNCTION claim_next_task_service_role(p_worker_id text, p_include_active boolean DEFAULT false,
                                             p_run_type text DEFAULT NULL, p_same_model_only boolean DEFAULT false,
                                             p_max_task_wait_minutes integer DEFAULT 5)
RETURNS TABLE (task_id uuid, params jsonb, task_type text, project_id uuid, user_id uuid)
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_worker_model text;
    v_bypass_affinity boolean := true;
BEGIN
    SELECT w.current_model INTO v_worker_model FROM workers w WHERE w.id = p_worker_id AND w.status = 'active';
    CREATE TEMP TABLE _eligible_users ON COMMIT DROP AS
        SELECT u.id AS user_id FROM users u
          LEFT JOIN projects p ON p.user_id = u.id
          LEFT JOIN tasks running ON running.project_id = p.id AND running.status = 'In Progress'
                                 AND COALESCE(running.task_type, '') NOT ILIKE '%orchestrator%'
         WHERE u.credits > 0
           AND COALESCE((u.settings -> 'ui' -> 'generationMethods' ->> 'inCloud')::boolean, true)
         GROUP BY u.id HAVING count(running.id) < 5;
    IF p_same_model_only AND v_worker_model IS NOT NULL THEN
        SELECT COALESCE(NOT bool_or(get_task_model(t.params) = v_worker_model), true)
               OR COALESCE(bool_or(t.created_at < now() - make_interval(mins => COALESCE(p_max_task_wait_minutes, 5))), false)
          INTO v_bypass_affinity
          FROM tasks t JOIN projects p ON t.project_id = p.id
         WHERE t.status = 'Queued' AND all_dependencies_complete(t.dependant_on)
           AND EXISTS (SELECT 1 FROM _eligible_users eu WHERE eu.user_id = p.user_id)
           AND (p_run_type IS NULL OR get_task_run_type(t.task_type) = p_run_type);
    END IF;
    RETURN QUERY
    WITH ready AS (
        SELECT t.id, p.user_id AS owner,
               row_number() OVER (ORDER BY CASE WHEN v_bypass_affinity AND p_same_model_only THEN NULL
                                                WHEN v_worker_model IS NOT NULL
                                                     AND get_task_model(t.params) = v_worker_model THEN 0
                                                ELSE 1 END NULLS LAST, t.created_at) AS rn
          FROM tasks t JOIN projects p ON t.project_id = p.id
         WHERE t.status = 'Queued' AND all_dependencies_complete(t.dependant_on)
           AND EXISTS (SELECT 1 FROM _eligible_users eu WHERE eu.user_id = p.user_id)
           AND (p_run_type IS NULL OR get_task_run_type(t.task_type) = p_run_type)
           AND (v_bypass_affinity OR NOT p_same_model_only OR v_worker_model IS NULL
                OR get_task_model(t.params) = v_worker_model))
    UPDATE tasks SET status = 'In Progress', worker_id = p_worker_id, updated_at = now(),
                     generation_started_at = COALESCE(tasks.generation_started_at, now())
      FROM ready WHERE tasks.id = ready.id AND ready.rn = 1
    RETURNING tasks.id, tasks.params, tasks.task_type, tasks.project_id, ready.owner;
END $$;

-- A PAT user's own worker: that user's rows only, credits > 0, fewer than 5 In Progress (no cloud gate).
CREATE FUNCTION claim_next_task_user_pat(p_user_id uuid, p_include_active boolean DEFAULT false,
                                         p_run_type text DEFAULT NULL)
RETURNS TABLE (task_id uuid, params jsonb, task_type text, project_id uuid, user_id uuid)
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    RETURN QUERY
    WITH eligible AS (
        SELECT u.id FROM users u
          LEFT JOIN projects p ON p.user_id = u.id
          LEFT JOIN tasks running ON running.project_id = p.id AND running.status = 'In Progress'
                                 AND COALESCE(running.task_type, '') NOT ILIKE '%orchestrator%'
         WHERE u.id = p_user_id AND u.credits > 0
         GROUP BY u.id HAVING count(running.id) < 5),
    ready AS (
        SELECT t.id, p.user_id AS owner, row_number() OVER (ORDER BY t.created_at) AS rn
          FROM tasks t JOIN projects p ON t.project_id = p.id
         WHERE t.status = 'Queued' AND p.user_id = p_user_id AND all_dependencies_complete(t.dependant_on)
           AND EXISTS (SELECT 1 FROM eligible)
           AND (p_run_type IS NULL OR get_task_run_type(t.task_type) = p_run_type))
    UPDATE tasks SET status = 'In Progress', updated_at = now(),
                     generation_started_at = COALESCE(tasks.generation_started_at, now())
      FROM ready WHERE tasks.id = ready.id AND ready.rn = 1
    RETURNING tasks.id, tasks.params, tasks.task_type, tasks.project_id, ready.owner;
END $$;

-- Timeline placement, as complete-task calls it (20260129100000; a service-role caller has no auth.uid())
CREATE FUNCTION add_generation_to_shot(p_shot_id uuid, p_generation_id uuid, p_with_position boolean DEFAULT true)
RETURNS TABLE (id uuid, shot_id uuid, generation_id uuid, timeline_frame integer)
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    next_frame integer;
    shot_owner_id uuid;
BEGIN
    SELECT p.user_id INTO shot_owner_id FROM shots s JOIN projects p ON s.project_id = p.id WHERE s.id = p_shot_id;
    IF shot_owner_id IS NULL THEN RAISE EXCEPTION 'Shot not found: %', p_shot_id; END IF;
    IF shot_owner_id != auth.uid() THEN RAISE EXCEPTION 'Permission denied: you do not own this shot'; END IF;
    IF p_with_position THEN
        SELECT COALESCE(max(sg.timeline_frame), -50) + 50 INTO next_frame FROM shot_generations sg
         WHERE sg.shot_id = p_shot_id AND sg.timeline_frame IS NOT NULL;
    END IF;
    RETURN QUERY INSERT INTO shot_generations AS sg (shot_id, generation_id, timeline_frame, metadata)
        VALUES (p_shot_id, p_generation_id, next_frame,
                CASE WHEN p_with_position THEN '{"auto_positioned": true}'::jsonb ELSE '{}'::jsonb END)
        RETURNING sg.id, sg.shot_id, sg.generation_id, sg.timeline_frame;
END $$;

CREATE FUNCTION verify_api_token(p_token text) RETURNS boolean LANGUAGE sql SECURITY DEFINER AS $$
    SELECT EXISTS (SELECT 1 FROM user_api_tokens WHERE token = p_token)
$$;

-- ---------------------------------------------------------------------------------------------------------
-- Row-level security, in the final policy names
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users can view own data" ON users FOR SELECT USING (auth.uid() = id);

ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users can manage own projects" ON projects FOR ALL USING (auth.uid() = user_id)
    WITH CHECK (auth.uid() = user_id);

ALTER TABLE task_types ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Anyone can view task types" ON task_types FOR SELECT USING (true);

ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users can view their own tasks" ON tasks FOR SELECT
    USING (auth.uid() = (SELECT p.user_id FROM projects p WHERE p.id = tasks.project_id));
CREATE POLICY "Users can create tasks" ON tasks FOR INSERT
    WITH CHECK (auth.uid() = (SELECT p.user_id FROM projects p WHERE p.id = tasks.project_id));
CREATE POLICY "Users can update their own tasks (no timing)" ON tasks FOR UPDATE
    USING (auth.uid() = (SELECT p.user_id FROM projects p WHERE p.id = tasks.project_id));
CREATE POLICY "Service role can manage all tasks" ON tasks FOR ALL TO service_role USING (true) WITH CHECK (true);

ALTER TABLE workers ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Service role can manage workers" ON workers FOR ALL USING (auth.role() = 'service_role');
CREATE POLICY "Authenticated users can view workers" ON workers FOR SELECT USING (auth.role() = 'authenticated');

ALTER TABLE user_api_tokens ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users can view their own API tokens" ON user_api_tokens FOR SELECT USING (auth.uid() = user_id);

ALTER TABLE credits_ledger ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users can view own ledger" ON credits_ledger FOR SELECT USING (auth.uid() = user_id);

ALTER TABLE generations ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users can manage generations in own projects" ON generations FOR ALL
    USING (auth.uid() = (SELECT p.user_id FROM projects p WHERE p.id = generations.project_id));
ALTER TABLE generation_variants ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users can manage variants in own projects" ON generation_variants FOR ALL
    USING (auth.uid() = (SELECT p.user_id FROM projects p WHERE p.id = generation_variants.project_id));
ALTER TABLE shots ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users can manage own shots" ON shots FOR ALL
    USING (auth.uid() = (SELECT p.user_id FROM projects p WHERE p.id = shots.project_id));
ALTER TABLE shot_generations ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users can manage own shot generations" ON shot_generations FOR ALL
    USING (auth.uid() = (SELECT p.user_id FROM shots sh JOIN projects p ON p.id = sh.project_id
                         WHERE sh.id = shot_generations.shot_id));

-- The catalogue of task types Reigh ships that matter here (billing per second of generation).
INSERT INTO task_types (name, run_type, category, display_name, billing_type, base_cost_per_second, unit_cost,
                        content_type, variant_type) VALUES
    ('travel_orchestrator', 'gpu', 'orchestration', 'Travel Between Images', 'per_second', 0.0278, NULL, 'video', NULL),
    ('travel_segment', 'gpu', 'generation', 'Travel Segment', 'per_second', 0.0278, NULL, 'video', 'travel_segment'),
    ('travel_stitch', 'gpu', 'processing', 'Travel Stitch', 'per_second', 0.0278, NULL, 'video', 'travel_stitch'),
    ('wan_2_2_t2i', 'gpu', 'generation', 'Wan 2.2 Text to Image', 'per_second', 0.0278, NULL, 'image', NULL),
    ('t2v', 'gpu', 'generation', 'Text to Video', 'per_second', 0.0278, NULL, 'video', NULL),
    ('vace', 'gpu', 'generation', 'VACE', 'per_second', 0.0278, NULL, 'video', NULL),
    ('animate_character', 'gpu', 'generation', 'Animate Character', 'per_second', 0.0278, NULL, 'video', NULL),
    ('qwen_image', 'api', 'generation', 'Qwen Image (API)', 'per_unit', 0, 0.5, 'image', NULL),
    ('image-upscale', 'api', 'processing', 'Image Upscale (API)', 'per_unit', 0, 0.2, 'image', 'upscaled');
