-- A project whose web app made the tasks table before us keeps it as it is: uuid or text ids, a status
-- enum or text, json or jsonb params. One domain per column the SQL functions read or write stands for
-- that column's type (tasks_id_t, tasks_status_t, tasks_dependant_on_t, tasks_project_id_t), so the
-- functions (005) cast at the edges and the user's columns and data are never rewritten. Without a table
-- yet, the domains are text (the table 001 creates).
-- Numbered 000 and run in its own transaction: it must come before 002, which names 'Cancelled', and a
-- value added to an enum can only be used once the transaction that added it has committed.
DO $$
DECLARE
    status_type oid;
    value text;
    col record;
BEGIN
    SELECT a.atttypid INTO status_type FROM pg_attribute AS a
    WHERE a.attrelid = to_regclass('tasks') AND a.attname = 'status' AND NOT a.attisdropped;
    IF status_type IS NOT NULL AND (SELECT t.typtype FROM pg_type AS t WHERE t.oid = status_type) = 'e' THEN
        FOREACH value IN ARRAY ARRAY['Queued', 'In Progress', 'Complete', 'Failed', 'Cancelled'] LOOP
            EXECUTE format('ALTER TYPE %s ADD VALUE IF NOT EXISTS %L', status_type::regtype, value);
        END LOOP;
    END IF;
    FOR col IN
        SELECT c.name, COALESCE(format_type(a.atttypid, a.atttypmod), 'text') AS type
        FROM unnest(ARRAY['id', 'status', 'dependant_on', 'project_id']) AS c(name)
        LEFT JOIN pg_attribute AS a
               ON a.attrelid = to_regclass('tasks') AND a.attname = c.name AND NOT a.attisdropped
    LOOP
        IF to_regtype(format('%I.%I', current_schema(), 'tasks_' || col.name || '_t')) IS NULL THEN
            EXECUTE format('CREATE DOMAIN %I AS %s', 'tasks_' || col.name || '_t', col.type);
        END IF;
    END LOOP;
END
$$;
