-- Through the Supabase API a claimed row travels as JSON (PostgREST → HTTP → Python's parser). A row whose
-- params nest deeper than that parser goes (thousands of levels) was claimed, committed, and never seen by the
-- worker: it sat In Progress until its lease ran out, was claimed again, and ended "lease expired after N
-- attempts" instead of saying what is wrong with it. The worker now fails the row that claim gave it (its
-- latest claim it still holds, not a parked orchestrator) with the reason, and claims the next one.
-- (A direct connection reads params as text and fails such a row by the claim's own check.)

CREATE OR REPLACE FUNCTION fail_undecodable_claim(p_worker_id text, p_error_message text) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    held text;
BEGIN
    SELECT t.id::text INTO held FROM tasks AS t
    WHERE t.worker_id = p_worker_id AND t.status = 'In Progress' AND NOT t.awaiting_children
    ORDER BY t.claimed_at DESC NULLS LAST, t.id LIMIT 1;
    IF held IS NULL OR NOT fail_task(held, p_worker_id, p_error_message) THEN
        RETURN NULL;
    END IF;
    RETURN held;
END
$$;

-- A token worker: only under a worker id of the token's own user (its claims keep to that user's projects).
CREATE OR REPLACE FUNCTION user_fail_undecodable_claim(p_token text, p_worker_id text, p_error_message text)
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM tasks_token_worker(p_token, p_worker_id);  -- an invalid token or another's id stops here
    RETURN fail_undecodable_claim(p_worker_id, p_error_message);
END
$$;

SELECT tasks_add_worker_functions(ARRAY['fail_undecodable_claim']);

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 28;
$$;
