-- A doorbell instead of LISTEN for waking one worker (issue 23). Postgres signals every backend that
-- LISTENs in a database on every committed NOTIFY, whatever its channel: with 500 idle workers each
-- listening on its own channel, one insert woke 500 server processes, and ~90 inserts/s took two cores.
-- A worker's second connection now sleeps in worker_doorbell_wait() instead; a ringer (the dispatcher
-- choosing that worker, a cancel of the row it runs) bumps the worker's doorbell_rung and cancels that one
-- sleeping statement (pg_cancel_backend signals one process). The wait catches the cancel, waits for the
-- ringer to commit and returns the new count: nothing is logged, and only the rung worker's process wakes.
--
-- Registration (worker_doorbell_register, once per connection) records the backend's pid and holds a
-- session advisory lock for as long as the connection lives: a ringer cancels the pid only while that lock
-- is held, so a pid the server reused for another session is never signalled. It answers NULL when the
-- ringers (this migration's owner, through SECURITY DEFINER) may not cancel this session's statements
-- (another role, a superuser's session): the worker then LISTENs on its channel as before, and a ringer
-- NOTIFYs the worker it cannot ring.

ALTER TABLE workers ADD COLUMN IF NOT EXISTS doorbell_pid integer NULL;
ALTER TABLE workers ADD COLUMN IF NOT EXISTS doorbell_rung bigint NOT NULL DEFAULT 0;

-- Advisory lock keys per schema and worker: 'alive' is held by the registered doorbell connection,
-- 'settle' by a ringer until it commits (the rung sleeper waits for it before reading its count).
CREATE OR REPLACE FUNCTION tasks_doorbell_key(p_purpose text, p_worker_id text) RETURNS bigint
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT hashtextextended('tasks_doorbell:' || p_purpose || ':' || current_schema() || ':' || p_worker_id, 0);
$$;

-- May the current user (a ringer's identity: this function's caller is SECURITY DEFINER) cancel a
-- statement of a session logged in as p_role? Postgres's own rule for pg_cancel_backend.
CREATE OR REPLACE FUNCTION tasks_may_cancel(p_role name) RETURNS boolean
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT COALESCE((
        SELECT (NOT target.rolsuper OR me.rolsuper)
               AND (pg_has_role(me.oid, target.oid, 'USAGE') OR pg_has_role(me.oid, 'pg_signal_backend', 'USAGE'))
        FROM pg_roles AS target, pg_roles AS me
        WHERE target.rolname = p_role AND me.rolname = current_user), false);
$$;

-- Once per doorbell connection: the current count (the caller waits for it to change), NULL when ringers
-- cannot cancel this session (LISTEN instead), -1 when another live connection holds this worker's
-- doorbell (a restarted worker whose old connection the server has not yet ended: try again shortly).
CREATE OR REPLACE FUNCTION worker_doorbell_register(p_worker_id text) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    rung bigint;
BEGIN
    IF NOT tasks_may_cancel(session_user) THEN
        RETURN NULL;
    END IF;
    IF NOT pg_try_advisory_lock(tasks_doorbell_key('alive', p_worker_id)) THEN
        RETURN -1;
    END IF;
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO workers AS w (id, status, last_heartbeat, doorbell_pid)
    VALUES (p_worker_id, 'running', now(), pg_backend_pid())
    ON CONFLICT (id) DO UPDATE SET doorbell_pid = excluded.doorbell_pid
    RETURNING w.doorbell_rung INTO rung;
    RETURN rung;
END
$$;

-- Wait for a ringer that holds this worker's settle lock to end its transaction (the lock is taken in a
-- block that is then rolled back: nothing stays held, even when a cancel lands inside it).
CREATE OR REPLACE FUNCTION tasks_doorbell_settle(p_key bigint) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    BEGIN
        PERFORM pg_advisory_xact_lock_shared(p_key);
        RAISE SQLSTATE 'TDB01';
    EXCEPTION WHEN SQLSTATE 'TDB01' THEN
        NULL;
    END;
END
$$;

-- Sleep up to p_seconds unless the count differs from p_seen; returns the count. A ring (or the caller's
-- own cancel, or a statement timeout) ends the sleep; the count is read once the ringer has committed.
-- A ring sent while this connection was between two waits is not lost: the next wait's settle waits for
-- that ringer and sees its count.
CREATE OR REPLACE FUNCTION worker_doorbell_wait(p_worker_id text, p_seen bigint, p_seconds double precision)
RETURNS bigint LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    settle_key bigint := tasks_doorbell_key('settle', p_worker_id);
    deadline timestamptz := clock_timestamp() + make_interval(secs => p_seconds);
    rung bigint;
    interrupted boolean := false;
BEGIN
    LOOP
        BEGIN
            PERFORM tasks_doorbell_settle(settle_key);
            SELECT w.doorbell_rung INTO rung FROM workers AS w WHERE w.id = p_worker_id;
            IF rung IS DISTINCT FROM p_seen OR interrupted OR clock_timestamp() >= deadline THEN
                RETURN rung;
            END IF;
            PERFORM pg_sleep(extract(epoch FROM deadline - clock_timestamp()));
            RETURN rung;
        EXCEPTION WHEN query_canceled THEN
            interrupted := true;  -- the next pass settles, reads and returns
        END;
    END LOOP;
END
$$;

-- Ring one worker: bump its count and cancel its sleeping wait when its doorbell connection is alive and
-- may be cancelled; otherwise NOTIFY its channel (a LISTENing worker, or one of an earlier version).
CREATE OR REPLACE FUNCTION tasks_ring_doorbell(p_worker_id text, p_reason text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    sleeper integer;
BEGIN
    UPDATE workers SET doorbell_rung = doorbell_rung + 1 WHERE id = p_worker_id RETURNING doorbell_pid INTO sleeper;
    -- the row lock first, then the settle lock: every ringer takes them in this order
    IF sleeper IS NOT NULL AND NOT pg_try_advisory_xact_lock_shared(tasks_doorbell_key('alive', p_worker_id)) THEN
        PERFORM pg_advisory_xact_lock(tasks_doorbell_key('settle', p_worker_id));
        PERFORM pg_cancel_backend(sleeper);
        RETURN;
    END IF;
    PERFORM pg_notify(tasks_worker_channel(p_worker_id), p_reason);
END
$$;

-- The user a row's project belongs to (NULL without a projects(id, user_id) table, or for a row of no
-- project): a token worker (025, 026) can only claim rows of its own user's projects.
-- One primary-key probe per row: the id compared in projects.id's own type (a text that is not a uuid
-- names no project of a uuid-keyed table, and never makes the insert fail).
DO $$
DECLARE
    body text := 'SELECT NULL::text';
    id_type text;
BEGIN
    IF to_regclass('projects') IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('projects') AND attname = 'user_id'
                   AND NOT attisdropped) THEN
        SELECT format_type(a.atttypid, NULL) INTO id_type FROM pg_attribute AS a
        WHERE a.attrelid = to_regclass('projects') AND a.attname = 'id' AND NOT a.attisdropped;
        body := CASE
            WHEN id_type = 'uuid' THEN
                'SELECT p.user_id::text FROM projects AS p WHERE p.id = (CASE WHEN p_project_id ~* '
                || quote_literal('^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$')
                || ' THEN p_project_id::uuid END)'
            WHEN id_type IN ('text', 'character varying') THEN
                'SELECT p.user_id::text FROM projects AS p WHERE p.id = p_project_id'
            ELSE 'SELECT p.user_id::text FROM projects AS p WHERE p.id::text = p_project_id'
        END;
    END IF;
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION tasks_project_user(p_project_id text) RETURNS text
        LANGUAGE sql STABLE SET search_path FROM CURRENT AS $b$ %s $b$ $f$, body);
END
$$;

-- 023's dispatcher, ringing instead of notifying, and choosing only a worker that may claim the row: a
-- service worker (no owner) or a token worker of the row's own user. Before, a token worker woken for another
-- user's row claimed nothing, and the row waited for the next idle renewal of a worker that could take it.
-- It now takes the rows' ids and reads what each needs of a worker (model, task type, user) itself, highest
-- priority first, instead of each trigger assembling three parallel arrays.
DROP FUNCTION IF EXISTS tasks_wake_idle_workers(text[], text[]);
CREATE OR REPLACE FUNCTION tasks_wake_idle_workers(p_task_ids text[]) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    row_needs record;
    chosen text;
    rung text[] := '{}';
BEGIN
    IF COALESCE(cardinality(p_task_ids), 0) = 0 THEN
        RETURN 0;
    END IF;
    PERFORM tasks_dispatch_lock();
    FOR row_needs IN
        SELECT t.params ->> 'model' AS model, t.task_type, tasks_project_user(t.project_id::text) AS user_id
        FROM tasks AS t
        WHERE t.id = ANY (p_task_ids::tasks_id_t[]) AND t.status = 'Queued' AND NOT t.blocked_by_dependency
        ORDER BY t.priority DESC, t.created_at
    LOOP
        UPDATE workers AS w SET idle_since = NULL, idle_expires_at = NULL, woken_at = clock_timestamp()
        WHERE w.id = COALESCE(
            (SELECT m.id FROM workers AS m
             WHERE row_needs.model IS NOT NULL AND m.idle_since IS NOT NULL AND m.resident_model = row_needs.model
               AND m.idle_expires_at > now()
               AND tasks_worker_accepts(m.capabilities, row_needs.task_type, row_needs.model)
               AND (m.owner_user_id IS NULL OR m.owner_user_id = row_needs.user_id)
             ORDER BY m.idle_since LIMIT 1),
            (SELECT a.id FROM workers AS a
             WHERE a.idle_since IS NOT NULL AND a.idle_expires_at > now()
               AND tasks_worker_accepts(a.capabilities, row_needs.task_type, row_needs.model)
               AND (a.owner_user_id IS NULL OR a.owner_user_id = row_needs.user_id)
             ORDER BY a.idle_since LIMIT 1))
        RETURNING w.id INTO chosen;
        CONTINUE WHEN NOT FOUND;  -- nobody idle can run this row; a later one may suit another worker
        rung := rung || chosen;
    END LOOP;
    -- Rung together once all are chosen: a rung worker's wait blocks until this transaction commits, and a
    -- lock wait longer than deadlock_timeout (1 s) runs Postgres's deadlock check (a bulk insert choosing
    -- 1,000 workers one by one on a busy server could keep the first ones waiting that long).
    PERFORM tasks_ring_doorbell(worker, 'wake') FROM unnest(rung) AS worker;
    RETURN cardinality(rung);
END
$$;

-- The three places that wake workers pass the ids of the rows that became claimable.
CREATE OR REPLACE FUNCTION tasks_dispatch_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM tasks_wake_idle_workers(ARRAY(SELECT n.id::text FROM new_rows AS n));
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION tasks_dispatch_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.worker_id IS NOT NULL AND OLD.status = 'In Progress' THEN
            PERFORM tasks_ring_doorbell(OLD.worker_id::text, 'task');
        END IF;
        RETURN NULL;
    END IF;
    IF NEW.status = 'Queued' AND NOT NEW.blocked_by_dependency THEN
        PERFORM tasks_wake_idle_workers(ARRAY[NEW.id::text]);
    ELSIF NEW.status = 'Cancelled' AND OLD.worker_id IS NOT NULL THEN
        PERFORM tasks_ring_doorbell(OLD.worker_id::text, 'task');
    END IF;
    RETURN NULL;
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

-- Token workers over a direct connection (025, 026): the same doorbell, under worker ids of the token's own
-- user. (Executable by anyone, like every user_* function: the token is the check.)
CREATE OR REPLACE FUNCTION user_worker_doorbell_register(p_token text, p_worker_id text) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    me text := tasks_token_worker(p_token, p_worker_id);  -- an invalid token or another's id stops here
    rung bigint := worker_doorbell_register(p_worker_id);
BEGIN
    UPDATE workers SET owner_user_id = me WHERE id = p_worker_id AND owner_user_id IS DISTINCT FROM me;
    RETURN rung;
END
$$;

CREATE OR REPLACE FUNCTION user_worker_doorbell_wait(
    p_token text, p_worker_id text, p_seen bigint, p_seconds double precision) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM tasks_token_worker(p_token, p_worker_id);
    RETURN worker_doorbell_wait(p_worker_id, p_seen, p_seconds);
END
$$;

SELECT tasks_add_worker_functions(ARRAY[
    'tasks_doorbell_key', 'tasks_may_cancel', 'worker_doorbell_register', 'tasks_doorbell_settle',
    'worker_doorbell_wait', 'tasks_ring_doorbell', 'tasks_project_user']);

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 27;
$$;
