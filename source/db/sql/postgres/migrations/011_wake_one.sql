-- Wake one idle worker per claimable row instead of every worker per insert (issue 23).
-- An idle worker registers in `workers` (worker_idle: idle_since, and idle_expires_at, a lease on its
-- idleness that it renews once per poll interval). When rows become claimable, the dispatcher
-- (tasks_wake_idle_workers) picks as many registered, unexpired idle workers as there are new rows —
-- a worker whose resident model is the row's params.model first — takes them out of the idle set and
-- NOTIFYs each one on its own channel (tasks_worker_channel). A chosen worker that died meanwhile is
-- covered by the others' fallback poll (worker_idle answers whether a row is claimable), so the poll
-- interval bounds the wait; a dead worker's idleness expires after two poll intervals and it is no longer
-- chosen. The broadcast on tasks_changed (004) stays, for workers of earlier versions during an upgrade.
-- Both table shapes: statuses are compared as literals, ids cast where they meet a column (see 005).

ALTER TABLE workers ADD COLUMN IF NOT EXISTS idle_since timestamptz NULL;
ALTER TABLE workers ADD COLUMN IF NOT EXISTS idle_expires_at timestamptz NULL;
ALTER TABLE workers ADD COLUMN IF NOT EXISTS woken_at timestamptz NULL;
CREATE INDEX IF NOT EXISTS workers_idle_idx ON workers (idle_since) WHERE idle_since IS NOT NULL;
CREATE INDEX IF NOT EXISTS workers_idle_model_idx ON workers (resident_model, idle_since)
    WHERE idle_since IS NOT NULL;

-- A worker's own NOTIFY channel: an identifier (63 bytes at most) whatever the worker id, per schema.
CREATE OR REPLACE FUNCTION tasks_worker_channel(p_worker_id text) RETURNS text
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT 'tasks_w_' || left(md5(current_schema() || ':' || p_worker_id), 24);
$$;

-- Serialises the dispatcher with workers going idle: a row inserted while a worker registers is either
-- seen by worker_idle's answer or sees that worker in the idle set (no lost wake-up). Held by an inserting
-- transaction until it commits, like the NOTIFY queue lock every insert already takes at commit.
CREATE OR REPLACE FUNCTION tasks_dispatch_lock() RETURNS void
LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    SELECT pg_advisory_xact_lock(hashtext('tasks_dispatch:' || current_schema()));
$$;

-- Register (or renew) this worker as idle; true when a row is claimable right now (claim, do not wait).
-- One statement per poll interval per idle worker; no WAL flush wait (a lost registration only means a
-- poll-interval wait).
CREATE OR REPLACE FUNCTION worker_idle(
    p_worker_id text, p_resident_model text DEFAULT NULL, p_poll_seconds double precision DEFAULT 10)
RETURNS boolean LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM tasks_dispatch_lock();
    INSERT INTO workers AS w (id, status, resident_model, idle_since, idle_expires_at, last_heartbeat)
    VALUES (p_worker_id, 'running', p_resident_model, now(),
            now() + make_interval(secs => 2 * p_poll_seconds), now())
    ON CONFLICT (id) DO UPDATE SET
        status = 'running', resident_model = excluded.resident_model, current_task_id = NULL,
        idle_since = COALESCE(w.idle_since, excluded.idle_since), idle_expires_at = excluded.idle_expires_at,
        woken_at = NULL, last_heartbeat = excluded.last_heartbeat;
    RETURN EXISTS (SELECT 1 FROM tasks AS t WHERE t.status = 'Queued' AND NOT t.blocked_by_dependency);
END
$$;

-- Leaving the idle set (a claim came through, the worker stops): the dispatcher no longer picks it.
CREATE OR REPLACE FUNCTION worker_busy(p_worker_id text) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    SELECT set_config('synchronous_commit', 'off', true);
    UPDATE workers SET idle_since = NULL, idle_expires_at = NULL WHERE id = p_worker_id AND idle_since IS NOT NULL;
    SELECT true;
$$;

-- What a worker behind the transaction pooler polls instead of LISTEN (one primary-key probe): changes
-- when the dispatcher chose it.
CREATE OR REPLACE FUNCTION worker_woken(p_worker_id text) RETURNS text
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT COALESCE((SELECT w.woken_at::text FROM workers AS w WHERE w.id = p_worker_id), '');
$$;

-- p_models: one element per newly claimable row, its params.model (NULL when it names none). Wakes at
-- most that many idle workers; returns how many it woke.
CREATE OR REPLACE FUNCTION tasks_wake_idle_workers(p_models text[]) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    wanted text;
    chosen text;
    woken integer := 0;
BEGIN
    IF COALESCE(cardinality(p_models), 0) = 0 THEN
        RETURN 0;
    END IF;
    PERFORM tasks_dispatch_lock();
    FOREACH wanted IN ARRAY p_models LOOP
        -- Capability filters (task types, models, memory) belong in both probes below, beside the
        -- idleness lease; the model probe is the affinity preference, the second one anyone alive.
        UPDATE workers AS w SET idle_since = NULL, idle_expires_at = NULL, woken_at = clock_timestamp()
        WHERE w.id = COALESCE(
            (SELECT m.id FROM workers AS m
             WHERE wanted IS NOT NULL AND m.idle_since IS NOT NULL AND m.resident_model = wanted
               AND m.idle_expires_at > now()
             ORDER BY m.idle_since LIMIT 1),
            (SELECT a.id FROM workers AS a
             WHERE a.idle_since IS NOT NULL AND a.idle_expires_at > now()
             ORDER BY a.idle_since LIMIT 1))
        RETURNING w.id INTO chosen;
        EXIT WHEN NOT FOUND;
        PERFORM pg_notify(tasks_worker_channel(chosen), 'wake');
        woken := woken + 1;
    END LOOP;
    RETURN woken;
END
$$;

-- Inserts: one dispatch per statement, over the rows it made claimable.
CREATE OR REPLACE FUNCTION tasks_dispatch_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM tasks_wake_idle_workers(ARRAY(
        SELECT n.params ->> 'model' FROM new_rows AS n
        WHERE n.status = 'Queued' AND NOT n.blocked_by_dependency
        ORDER BY n.priority DESC, n.created_at));
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS tasks_dispatch_inserted ON tasks;
CREATE TRIGGER tasks_dispatch_inserted AFTER INSERT ON tasks REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_dispatch_inserted();

-- Updates: a row back to Queued (requeue, retry, expired lease) wakes one worker; a cancelled or deleted
-- row tells the worker that runs it (its heartbeat looks at the row at once).
CREATE OR REPLACE FUNCTION tasks_dispatch_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.worker_id IS NOT NULL AND OLD.status = 'In Progress' THEN
            PERFORM pg_notify(tasks_worker_channel(OLD.worker_id), 'task');
        END IF;
        RETURN NULL;
    END IF;
    IF NEW.status = 'Queued' AND NOT NEW.blocked_by_dependency THEN
        PERFORM tasks_wake_idle_workers(ARRAY[NEW.params ->> 'model']);
    ELSIF NEW.status = 'Cancelled' AND OLD.worker_id IS NOT NULL THEN
        PERFORM pg_notify(tasks_worker_channel(OLD.worker_id), 'task');
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS tasks_dispatch_changed ON tasks;
CREATE TRIGGER tasks_dispatch_changed AFTER UPDATE ON tasks
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status IN ('Queued', 'Cancelled'))
    EXECUTE FUNCTION tasks_dispatch_changed();
DROP TRIGGER IF EXISTS tasks_dispatch_deleted ON tasks;
CREATE TRIGGER tasks_dispatch_deleted AFTER DELETE ON tasks
    FOR EACH ROW WHEN (OLD.status = 'In Progress') EXECUTE FUNCTION tasks_dispatch_changed();

-- Dependants unblocked by a completion: one wake per row that became claimable.
CREATE OR REPLACE FUNCTION tasks_unblock_dependants() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    models text[];
BEGIN
    WITH unblocked AS (
        UPDATE tasks SET blocked_by_dependency = false
        WHERE dependant_on = NEW.id AND blocked_by_dependency
        RETURNING params ->> 'model' AS model, status
    )
    SELECT array_agg(u.model) FILTER (WHERE u.status = 'Queued') INTO models FROM unblocked AS u;
    IF models IS NOT NULL THEN
        PERFORM pg_notify('tasks_changed', TG_TABLE_SCHEMA);  -- workers of earlier versions
        PERFORM tasks_wake_idle_workers(models);
    END IF;
    RETURN NULL;
END
$$;

-- Triggers run as the table's owner (see 006): a producer's insert picks and wakes workers it cannot see.
-- (CREATE OR REPLACE above reset tasks_unblock_dependants to SECURITY INVOKER: set again.)
ALTER FUNCTION tasks_dispatch_inserted() SECURITY DEFINER;
ALTER FUNCTION tasks_dispatch_changed() SECURITY DEFINER;
ALTER FUNCTION tasks_unblock_dependants() SECURITY DEFINER;

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 11;
$$;
