-- Bring-your-own-GPU: a user runs a worker on their own machine with a personal access token instead of
-- the service-role key (the older worker's --supabase-access-token). The token is looked up in
-- user_api_tokens, stored hashed (sha256, hex); the user_* functions below check it and reach only the rows
-- of that user's projects (projects.user_id). They are SECURITY DEFINER and the only functions such a
-- worker can call: over the API with the anon key, or over a direct connection with a role that has no
-- rights on the tables at all.

-- An existing table keeps its rows: its plain tokens are hashed in place (token_hash) and the plain column
-- emptied. A web app that still writes plain tokens has them hashed on the way in (trigger).
DO $$
BEGIN
    IF to_regclass('user_api_tokens') IS NULL THEN
        CREATE TABLE user_api_tokens (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id uuid NOT NULL,
            token text NULL,  -- write a plain token here: it is replaced by its hash on the way in
            token_hash text NULL,
            label text NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz NULL
        );
    END IF;
    ALTER TABLE user_api_tokens ADD COLUMN IF NOT EXISTS token text NULL;
    ALTER TABLE user_api_tokens ADD COLUMN IF NOT EXISTS token_hash text NULL;
    ALTER TABLE user_api_tokens ADD COLUMN IF NOT EXISTS revoked_at timestamptz NULL;
    ALTER TABLE user_api_tokens ALTER COLUMN token DROP NOT NULL;
END
$$;

CREATE OR REPLACE FUNCTION tasks_hash_token(p_token text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path FROM CURRENT AS $$
    SELECT encode(sha256(convert_to(p_token, 'UTF8')), 'hex');
$$;

CREATE OR REPLACE FUNCTION user_api_tokens_hash() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.token IS NOT NULL THEN
        NEW.token_hash := tasks_hash_token(NEW.token);
        NEW.token := NULL;
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS user_api_tokens_hash ON user_api_tokens;
CREATE TRIGGER user_api_tokens_hash BEFORE INSERT OR UPDATE OF token ON user_api_tokens
    FOR EACH ROW EXECUTE FUNCTION user_api_tokens_hash();

UPDATE user_api_tokens SET token = token WHERE token IS NOT NULL;  -- the trigger hashes the existing ones
CREATE INDEX IF NOT EXISTS user_api_tokens_token_hash_idx ON user_api_tokens (token_hash);

-- The user a token belongs to; an unknown or revoked token is refused (SQLSTATE 28000).
CREATE OR REPLACE FUNCTION tasks_token_user(p_token text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path FROM CURRENT AS $$
DECLARE
    found text;
BEGIN
    SELECT u.user_id::text INTO found FROM user_api_tokens AS u
    WHERE u.token_hash = tasks_hash_token(p_token) AND u.revoked_at IS NULL
    LIMIT 1;
    IF found IS NULL THEN
        RAISE EXCEPTION 'invalid or revoked access token' USING ERRCODE = '28000';
    END IF;
    RETURN found;
END
$$;

-- The ids of a user's projects (none when the database has no projects(id, user_id) table).
DO $$
DECLARE
    body text := 'SELECT ''{}''::text[]';
BEGIN
    IF to_regclass('projects') IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('projects') AND attname = 'user_id'
                   AND NOT attisdropped) THEN
        body := 'SELECT COALESCE(array_agg(p.id::text), ''{}'') FROM projects AS p WHERE p.user_id::text = p_user_id';
    END IF;
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION tasks_user_projects(p_user_id text) RETURNS text[]
        LANGUAGE sql STABLE SET search_path FROM CURRENT AS $b$ %s $b$ $f$, body);
END
$$;

CREATE OR REPLACE FUNCTION tasks_token_projects(p_token text) RETURNS text[]
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT tasks_user_projects(tasks_token_user(p_token));
$$;

-- Whether a row belongs to the token's user (an invalid token raises).
CREATE OR REPLACE FUNCTION tasks_token_task(p_token text, p_task_id text) RETURNS boolean
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT EXISTS (SELECT 1 FROM tasks AS t
                   WHERE t.id = p_task_id::tasks_id_t AND t.project_id::text = ANY (tasks_token_projects(p_token)));
$$;

-- Retries (022's retry_later) put a row back with run_after; the claim skips rows not yet due.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS run_after timestamptz NULL;
CREATE INDEX IF NOT EXISTS tasks_run_after_idx ON tasks (run_after) WHERE status = 'Queued' AND run_after IS NOT NULL;

-- The claim gains a project filter (NULL: every project, what the service worker asks for).
DROP FUNCTION IF EXISTS claim_next_task(text, double precision, text, text[], double precision);
CREATE OR REPLACE FUNCTION claim_next_task(
    p_worker_id text, p_lease_seconds double precision DEFAULT 60, p_resident_model text DEFAULT NULL,
    p_resident_task_types text[] DEFAULT '{}'::text[], p_affinity_window_seconds double precision DEFAULT 120,
    p_project_ids text[] DEFAULT NULL)
RETURNS SETOF tasks LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    -- for this transaction only (a SET clause on the function would end before the commit)
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH head AS MATERIALIZED (
        SELECT t.id, t.priority, t.created_at
        FROM tasks AS t
        WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency
          AND (t.run_after IS NULL OR t.run_after <= now())
          AND (p_project_ids IS NULL OR t.project_id::text = ANY (p_project_ids))
        ORDER BY t.priority DESC, t.created_at, t.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ),
    affine_head AS MATERIALIZED (
        SELECT head.priority FROM head
        WHERE p_resident_model IS NOT NULL
          AND head.created_at > now() - make_interval(secs => p_affinity_window_seconds)
    ),
    affine AS MATERIALIZED (
        SELECT c.id, c.created_at
        FROM affine_head AS h,
        LATERAL (SELECT t.id, t.created_at FROM tasks AS t
                 WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency
          AND (t.run_after IS NULL OR t.run_after <= now()) AND t.priority = h.priority
                   AND (p_project_ids IS NULL OR t.project_id::text = ANY (p_project_ids))
                   AND (t.params ->> 'model') = p_resident_model
                 ORDER BY t.created_at, t.id
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED) AS c
        UNION ALL
        SELECT c.id, c.created_at
        FROM affine_head AS h, unnest(p_resident_task_types) AS rt(task_type),
        LATERAL (SELECT t.id, t.created_at FROM tasks AS t
                 WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency
          AND (t.run_after IS NULL OR t.run_after <= now()) AND t.priority = h.priority
                   AND (p_project_ids IS NULL OR t.project_id::text = ANY (p_project_ids))
                   AND (t.params ->> 'model') IS NULL AND t.task_type = rt.task_type
                 ORDER BY t.created_at, t.id
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED) AS c
    ),
    pick AS (
        SELECT COALESCE((SELECT a.id FROM affine AS a ORDER BY a.created_at, a.id LIMIT 1),
                        (SELECT head.id FROM head)) AS id
    )
    UPDATE tasks
    SET status = 'In Progress',
        worker_id = p_worker_id,
        attempts = tasks.attempts + 1,
        lease_expires_at = now() + make_interval(secs => p_lease_seconds),
        heartbeat_at = now(),
        claimed_at = now(),
        generation_started_at = now(),
        generation_processed_at = NULL,
        progress = 0,
        error_message = NULL,
        updated_at = now()
    FROM pick
    WHERE tasks.id = pick.id AND tasks.status = 'Queued'
    RETURNING tasks.*;
END
$$;

CREATE OR REPLACE FUNCTION has_claimable_task() RETURNS boolean
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'Queued' AND NOT blocked_by_dependency
                                            AND (run_after IS NULL OR run_after <= now()));
$$;

-- The token worker's verbs: check the token and the row, then run the worker's own function.
CREATE OR REPLACE FUNCTION user_tasks_schema_version(p_token text) RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_user(p_token) IS NOT NULL THEN tasks_schema_version() END;
$$;

CREATE OR REPLACE FUNCTION user_claim_next_task(
    p_token text, p_worker_id text, p_lease_seconds double precision DEFAULT 60,
    p_resident_model text DEFAULT NULL, p_resident_task_types text[] DEFAULT '{}'::text[],
    p_affinity_window_seconds double precision DEFAULT 120)
RETURNS SETOF tasks LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT * FROM claim_next_task(p_worker_id, p_lease_seconds, p_resident_model, p_resident_task_types,
                                  p_affinity_window_seconds, tasks_token_projects(p_token));
$$;

CREATE OR REPLACE FUNCTION user_has_claimable_task(p_token text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT EXISTS (SELECT 1 FROM tasks AS t
                   WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency
                     AND t.project_id::text = ANY (tasks_token_projects(p_token)));
$$;

CREATE OR REPLACE FUNCTION user_tasks_change_marker(p_token text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT COALESCE((SELECT max(t.updated_at) FROM tasks AS t
                     WHERE t.project_id::text = ANY (tasks_token_projects(p_token)))::text, '');
$$;

CREATE OR REPLACE FUNCTION user_heartbeat_task(
    p_token text, p_task_id text, p_worker_id text, p_lease_seconds double precision,
    p_progress double precision DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_task(p_token, p_task_id)
                THEN heartbeat_task(p_task_id, p_worker_id, p_lease_seconds, p_progress) ELSE false END;
$$;

CREATE OR REPLACE FUNCTION user_complete_task(
    p_token text, p_task_id text, p_worker_id text, p_output_location text DEFAULT NULL, p_result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_task(p_token, p_task_id)
                THEN complete_task(p_task_id, p_worker_id, p_output_location, p_result) ELSE false END;
$$;

CREATE OR REPLACE FUNCTION user_fail_task(
    p_token text, p_task_id text, p_worker_id text, p_error_message text, p_result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_task(p_token, p_task_id)
                THEN fail_task(p_task_id, p_worker_id, p_error_message, p_result) ELSE false END;
$$;

CREATE OR REPLACE FUNCTION user_requeue_task(p_token text, p_task_id text, p_worker_id text)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_task(p_token, p_task_id) THEN requeue_task(p_task_id, p_worker_id) ELSE false END;
$$;

CREATE OR REPLACE FUNCTION user_task_status(p_token text, p_task_id text)
RETURNS TABLE (status text, worker_id text) LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT s.status, s.worker_id FROM task_status(p_task_id) AS s WHERE tasks_token_task(p_token, p_task_id);
$$;

CREATE OR REPLACE FUNCTION user_get_task(p_token text, p_task_id text)
RETURNS SETOF tasks LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT * FROM get_task(p_task_id) WHERE tasks_token_task(p_token, p_task_id);
$$;

-- Housekeeping is global (any worker may put an expired lease back); the caller hears only of its own rows.
CREATE OR REPLACE FUNCTION user_reclaim_expired_leases(p_token text)
RETURNS TABLE (id text, status text, attempts integer)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT tasks_token_user(p_token);  -- an invalid token stops here, before any change
    SELECT r.id, r.status, r.attempts FROM reclaim_expired_leases() AS r WHERE tasks_token_task(p_token, r.id);
$$;

CREATE OR REPLACE FUNCTION user_fail_orphaned_dependants(p_token text)
RETURNS TABLE (id text, dependant_on text, kind text)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT tasks_token_user(p_token);
    SELECT f.id, f.dependant_on, f.kind FROM fail_orphaned_dependants() AS f WHERE tasks_token_task(p_token, f.id);
$$;

-- Orchestrators: a token worker adds children only under its own running parent, in the parent's project.
CREATE OR REPLACE FUNCTION user_add_child_tasks(p_token text, p_parent_task_id text, p_children jsonb)
RETURNS TABLE (id text, child_key text) LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT c.id, c.child_key
    FROM (SELECT t.project_id::text AS project_id FROM tasks AS t
          WHERE t.id = p_parent_task_id::tasks_id_t AND tasks_token_task(p_token, p_parent_task_id)) AS parent,
    LATERAL add_child_tasks(p_parent_task_id, jsonb_build_object('children', (
        SELECT COALESCE(jsonb_agg(child || jsonb_build_object('project_id', parent.project_id) ORDER BY n), '[]')
        FROM jsonb_array_elements(p_children -> 'children') WITH ORDINALITY AS e(child, n)))) AS c;
$$;

CREATE OR REPLACE FUNCTION user_list_child_tasks(p_token text, p_parent_task_id text)
RETURNS SETOF tasks LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT * FROM list_child_tasks(p_parent_task_id) WHERE tasks_token_task(p_token, p_parent_task_id);
$$;

CREATE OR REPLACE FUNCTION user_park_awaiting_children(
    p_token text, p_task_id text, p_worker_id text, p_result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_task(p_token, p_task_id)
                THEN park_awaiting_children(p_task_id, p_worker_id, p_result) ELSE false END;
$$;

CREATE OR REPLACE FUNCTION user_complete_parent(
    p_token text, p_task_id text, p_output_location text, p_result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_task(p_token, p_task_id)
                THEN complete_parent(p_task_id, p_output_location, p_result) ELSE false END;
$$;

-- The worker registry: a token worker appears there like any other (the token is checked first).
CREATE OR REPLACE FUNCTION user_register_worker(
    p_token text, p_id text, p_host text DEFAULT NULL, p_pid integer DEFAULT NULL, p_gpu_name text DEFAULT NULL,
    p_gpu_memory_gb double precision DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_user(p_token) IS NOT NULL
                THEN register_worker(p_id, p_host, p_pid, p_gpu_name, p_gpu_memory_gb) END;
$$;

CREATE OR REPLACE FUNCTION user_touch_worker(
    p_token text, p_id text, p_resident_model text DEFAULT NULL, p_current_task_id text DEFAULT NULL,
    p_status text DEFAULT 'running', p_stats jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_user(p_token) IS NOT NULL
                THEN touch_worker(p_id, p_resident_model, p_current_task_id, p_status, p_stats) END;
$$;

-- Tokens are the service side's business (and each user's own rows, where Supabase auth is there).
DO $$
BEGIN
    IF tasks_supabase_roles_exist() THEN
        ALTER TABLE user_api_tokens ENABLE ROW LEVEL SECURITY;
        REVOKE ALL ON TABLE user_api_tokens FROM PUBLIC, anon, authenticated;
        GRANT ALL ON TABLE user_api_tokens TO service_role;
        IF to_regprocedure('auth.uid()') IS NOT NULL THEN
            GRANT SELECT, INSERT, DELETE ON TABLE user_api_tokens TO authenticated;
            DROP POLICY IF EXISTS user_api_tokens_own ON user_api_tokens;
            CREATE POLICY user_api_tokens_own ON user_api_tokens FOR ALL TO authenticated
                USING (user_id::text = auth.uid()::text) WITH CHECK (user_id::text = auth.uid()::text);
        END IF;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 7;
$$;
