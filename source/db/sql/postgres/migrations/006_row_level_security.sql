-- Supabase-style security. On a project with Supabase's roles (anon, authenticated, service_role), whose
-- default privileges hand every new table and function to anon and authenticated:
-- * row-level security on every table we create or adopt (tasks, workers, schema_migrations);
-- * no worker function executable by PUBLIC, anon or authenticated; service_role (and the owner) keep all
--   (tasks_schema_version stays public: a version number is all it tells);
-- * producers: an authenticated user may insert and read the tasks of their own projects, never another
--   user's (policies tasks_producer_select / tasks_producer_insert, through tasks_project_is_mine(), which
--   a project may replace to change the rule, or drop the policies to switch producer access off).
-- Policies a project already has on its tasks table are left as they are (policies add up).
-- On a plain Postgres without those roles nothing changes: the owner (the worker's role) is not bound by RLS.

-- The functions that only workers and operators call, those of later migrations (007-022) included: one
-- list, defined once. A name whose function does not exist yet is skipped (the lookup joins pg_proc), and the
-- migration runner applies tasks_apply_security() after every run, when they all exist.
CREATE OR REPLACE FUNCTION tasks_worker_functions() RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT ARRAY[
        'add_task', 'claim_next_task', 'has_claimable_task', 'heartbeat_task', 'complete_task', 'fail_task',
        'requeue_task', 'add_child_tasks', 'list_child_tasks', 'park_awaiting_children', 'complete_parent',
        'fail_parents_of_ended_children', 'cancel_children_of_ended_parents', 'cancel_task', 'retry_task',
        'reclaim_expired_leases', 'fail_orphaned_dependants', 'get_task', 'task_status', 'list_tasks',
        'count_tasks_by_status', 'count_tasks_by_worker', 'tasks_change_marker',
        'register_worker', 'touch_worker', 'list_workers', 'tasks_set_blocked', 'tasks_unblock_dependants',
        'tasks_notify_change', 'tasks_worker_functions', 'tasks_apply_security',
        'tasks_hash_token', 'user_api_tokens_hash', 'tasks_token_user', 'tasks_user_projects',
        'tasks_token_projects', 'tasks_token_task',
        'requeue_task_on_shutdown', 'fail_unrunnable_tasks',
        'tasks_worker_channel', 'tasks_dispatch_lock', 'worker_idle', 'worker_busy', 'worker_woken',
        'tasks_wake_idle_workers', 'tasks_dispatch_inserted', 'tasks_dispatch_changed',
        'purge_tasks', 'retry_later']::text[];
$$;

CREATE OR REPLACE FUNCTION tasks_supabase_roles_exist() RETURNS boolean
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT count(*) = 3 FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role');
$$;

-- Functions only: run after every migration run, it must not undo grants a project made on its tables.
CREATE OR REPLACE FUNCTION tasks_apply_security() RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    fn regprocedure;
BEGIN
    IF NOT tasks_supabase_roles_exist() THEN
        RETURN;
    END IF;
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc AS p
        WHERE p.pronamespace = current_schema()::regnamespace AND p.proname = ANY (tasks_worker_functions())
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC, anon, authenticated', fn);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', fn);
    END LOOP;
END
$$;

-- Tables, once: row-level security on, Supabase's default grants to anon/authenticated taken back.
DO $$
DECLARE
    tbl text;
BEGIN
    IF NOT tasks_supabase_roles_exist() THEN
        RETURN;
    END IF;
    FOREACH tbl IN ARRAY ARRAY['tasks', 'workers', 'schema_migrations'] LOOP
        CONTINUE WHEN to_regclass(tbl) IS NULL;  -- migrations applied by hand keep no schema_migrations
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', tbl);
        EXECUTE format('REVOKE ALL ON TABLE %I FROM PUBLIC, anon, authenticated', tbl);
        EXECUTE format('GRANT ALL ON TABLE %I TO service_role', tbl);
    END LOOP;
    -- producers: read and insert, the rows themselves filtered by the policies below
    GRANT SELECT, INSERT ON TABLE tasks TO authenticated;
END
$$;

-- Triggers run as the table's owner: a producer's insert reads its dependency's status (FOR SHARE, which
-- would need UPDATE rights) and unblocks dependants it cannot see.
ALTER FUNCTION tasks_set_blocked() SECURITY DEFINER;
ALTER FUNCTION tasks_unblock_dependants() SECURITY DEFINER;

-- Whose project is it: projects(id, user_id) against the caller's auth.uid(), when the project has both.
-- Without them it answers false (no producer access through the API). SECURITY DEFINER: the lookup does not
-- depend on the caller's rights on projects (Supabase's advice for policies that read another table).
DO $$
DECLARE
    same_type boolean;
    body text := 'SELECT false';
BEGIN
    IF to_regclass('projects') IS NOT NULL AND to_regprocedure('auth.uid()') IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('projects') AND attname = 'user_id'
                   AND NOT attisdropped) THEN
        SELECT format_type(a.atttypid, NULL) = format_type(b.atttypid, NULL) INTO same_type
        FROM pg_attribute AS a, pg_attribute AS b
        WHERE a.attrelid = to_regclass('projects') AND a.attname = 'id'
          AND b.attrelid = to_regclass('tasks') AND b.attname = 'project_id';
        body := format('SELECT EXISTS (SELECT 1 FROM projects AS p WHERE %s AND p.user_id::text = auth.uid()::text)',
                       CASE WHEN same_type THEN 'p.id = p_project_id' ELSE 'p.id::text = p_project_id::text' END);
    END IF;
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION tasks_project_is_mine(p_project_id tasks_project_id_t) RETURNS boolean
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $b$ %s $b$ $f$, body);
END
$$;

DROP POLICY IF EXISTS tasks_producer_select ON tasks;
DROP POLICY IF EXISTS tasks_producer_insert ON tasks;
DO $$
BEGIN
    IF tasks_supabase_roles_exist() THEN
        CREATE POLICY tasks_producer_select ON tasks FOR SELECT TO authenticated
            USING (tasks_project_is_mine(project_id));
        -- a producer queues work; it does not mark rows running or finished
        CREATE POLICY tasks_producer_insert ON tasks FOR INSERT TO authenticated
            WITH CHECK (tasks_project_is_mine(project_id) AND status::text = 'Queued' AND worker_id IS NULL);
        REVOKE EXECUTE ON FUNCTION tasks_project_is_mine(tasks_project_id_t) FROM PUBLIC, anon;
        GRANT EXECUTE ON FUNCTION tasks_project_is_mine(tasks_project_id_t) TO authenticated, service_role;
    END IF;
END
$$;

SELECT tasks_apply_security();

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 6;
$$;
