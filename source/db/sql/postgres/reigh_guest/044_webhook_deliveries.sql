-- What each webhook delivery came to (source/worker/webhooks.py), in the guest's own result of the row
-- (task_state.result.webhooks): Reigh's row is not written again once it ended.
CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer LANGUAGE sql IMMUTABLE AS $$ SELECT 44 $$;

CREATE FUNCTION tasks_record_webhook_deliveries(p_task_id text, p_worker_id text, p_deliveries jsonb)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    WITH changed AS (
        UPDATE task_state AS s
           SET result = COALESCE(s.result, '{}') || jsonb_build_object('webhooks', p_deliveries), updated_at = now()
          FROM tasks AS t
         WHERE s.task_id = as_uuid(p_task_id) AND t.id = s.task_id AND t.worker_id = p_worker_id
           AND t.status IN ('Complete', 'Failed', 'Cancelled')
        RETURNING 1)
    SELECT count(*) > 0 FROM changed;
$$;

DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA %I FROM PUBLIC', current_schema());
END
$$;
