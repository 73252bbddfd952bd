-- Row triggers: keep blocked_by_dependency true while a Queued row's dependency is not Complete, and
-- NOTIFY idle workers (channel tasks_changed, payload = schema) when a row becomes claimable or is cancelled.

CREATE OR REPLACE FUNCTION tasks_set_blocked() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    parent_status text;
BEGIN
    IF NEW.status <> 'Queued' THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.status = 'Queued' AND OLD.dependant_on IS NOT DISTINCT FROM NEW.dependant_on THEN
        RETURN NEW;
    END IF;
    IF NEW.dependant_on IS NULL THEN
        NEW.blocked_by_dependency := false;
    ELSIF TG_OP = 'INSERT' THEN
        -- FOR SHARE: a dependency completing right now either commits first (we read Complete) or
        -- waits for this insert to commit, after which its unblock trigger sees this row.
        SELECT d.status INTO parent_status FROM tasks AS d WHERE d.id = NEW.dependant_on FOR SHARE;
        NEW.blocked_by_dependency := parent_status IS DISTINCT FROM 'Complete';
    ELSE
        -- An UPDATE holds this row's lock already, so a completing dependency's unblock waits for it;
        -- no FOR SHARE here (it would invert the lock order and could deadlock).
        SELECT d.status INTO parent_status FROM tasks AS d WHERE d.id = NEW.dependant_on;
        NEW.blocked_by_dependency := parent_status IS DISTINCT FROM 'Complete';
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS tasks_set_blocked ON tasks;
CREATE TRIGGER tasks_set_blocked BEFORE INSERT OR UPDATE OF status, dependant_on ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_set_blocked();

CREATE OR REPLACE FUNCTION tasks_unblock_dependants() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE tasks SET blocked_by_dependency = false
    WHERE dependant_on = NEW.id AND blocked_by_dependency;
    IF FOUND THEN
        PERFORM pg_notify('tasks_changed', TG_TABLE_SCHEMA);  -- rows just became claimable
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS tasks_unblock_dependants ON tasks;
CREATE TRIGGER tasks_unblock_dependants AFTER UPDATE OF status ON tasks
    FOR EACH ROW WHEN (NEW.status = 'Complete' AND OLD.status IS DISTINCT FROM 'Complete')
    EXECUTE FUNCTION tasks_unblock_dependants();

-- One payload per schema: Postgres folds identical notifications of one transaction into one, so a
-- bulk insert wakes the workers once. Only what a waiting worker acts on notifies: a row that becomes
-- claimable (insert, back to Queued, dependency completed) or is cancelled. Claims, heartbeats and
-- plain completions stay silent: a NOTIFY takes a cluster-wide lock at commit, held through the WAL
-- flush, which would serialise every worker's claims and completions.
CREATE OR REPLACE FUNCTION tasks_notify_change() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_notify('tasks_changed', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS tasks_notify_insert ON tasks;
CREATE TRIGGER tasks_notify_insert AFTER INSERT OR DELETE ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_notify_change();
DROP TRIGGER IF EXISTS tasks_notify_update ON tasks;
CREATE TRIGGER tasks_notify_update AFTER UPDATE ON tasks
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status IN ('Queued', 'Cancelled'))
    EXECUTE FUNCTION tasks_notify_change();
