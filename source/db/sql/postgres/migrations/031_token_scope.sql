-- The token functions keep to the caller's own projects and worker ids (docs/security.md):
-- * user_fail_undecodable_claim failed the latest row held by any worker id the token named (an unregistered
--   or stale one passes tasks_token_worker), another tenant's row included: now only rows of the token's
--   projects;
-- * user_tasks_housekeeping_turn took the fleet's turn: a token looping it with an interval of 0 held the
--   turn without doing the job, and no service worker reclaimed a dead worker's row. A token now takes a turn
--   of its own user's (its workers share it among themselves); the fleet's turn is the service workers';
-- * user_worker_woken / user_tasks_worker_channel answered for any worker id: now only for the token's own;
-- * a signed-in user could mint a token by writing token_hash directly (while writing a plain token failed:
--   the hashing trigger ran with the caller's rights). token_hash is now only ever computed.
-- Producer-set ordering (the fairness rule, docs/security.md): a row a tenant inserts itself is ordered by
-- the server's clock and at most tasks_producer_priority_cap().

CREATE OR REPLACE FUNCTION user_fail_undecodable_claim(p_token text, p_worker_id text, p_error_message text)
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    held text;
BEGIN
    PERFORM tasks_token_worker(p_token, p_worker_id);  -- an invalid token or another's id stops here
    SELECT t.id::text INTO held FROM tasks AS t
    WHERE t.worker_id = p_worker_id AND t.status = 'In Progress' AND NOT t.awaiting_children
      AND t.project_id::text = ANY (tasks_token_projects(p_token))
    ORDER BY t.claimed_at DESC NULLS LAST, t.id LIMIT 1;
    IF held IS NULL OR NOT fail_task(held, p_worker_id, p_error_message) THEN
        RETURN NULL;
    END IF;
    RETURN held;
END
$$;

CREATE OR REPLACE FUNCTION user_tasks_housekeeping_turn(
    p_token text, p_job text, p_interval_seconds double precision, p_worker_id text DEFAULT NULL)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT tasks_housekeeping_turn(p_job || ' (user ' || tasks_token_user(p_token) || ')', p_interval_seconds,
                                   p_worker_id);
$$;

CREATE OR REPLACE FUNCTION user_worker_woken(p_token text, p_worker_id text) RETURNS text
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_worker(p_token, p_worker_id) IS NOT NULL THEN worker_woken(p_worker_id) END;
$$;

CREATE OR REPLACE FUNCTION user_tasks_worker_channel(p_token text, p_worker_id text) RETURNS text
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT CASE WHEN tasks_token_worker(p_token, p_worker_id) IS NOT NULL THEN tasks_worker_channel(p_worker_id) END;
$$;

-- Tokens: the plain token is hashed with the table owner's rights (the caller may not run tasks_hash_token),
-- and a hash written by a signed-in caller is refused (a trigger named to run before the hashing one).
ALTER FUNCTION user_api_tokens_hash() SECURITY DEFINER;

CREATE OR REPLACE FUNCTION user_api_tokens_refuse_hash() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF current_user IN ('anon', 'authenticated') AND NEW.token IS NULL AND NEW.token_hash IS NOT NULL
       AND (TG_OP = 'INSERT' OR NEW.token_hash IS DISTINCT FROM OLD.token_hash) THEN
        RAISE EXCEPTION 'write the plain token in user_api_tokens.token: token_hash is computed from it'
            USING ERRCODE = '42501';
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS user_api_tokens_a_refuse_hash ON user_api_tokens;
CREATE TRIGGER user_api_tokens_a_refuse_hash BEFORE INSERT OR UPDATE ON user_api_tokens
    FOR EACH ROW EXECUTE FUNCTION user_api_tokens_refuse_hash();

-- Fairness: a tenant orders only its own rows among themselves, never ahead of everyone's. A row inserted by a
-- signed-in user (Supabase's anon/authenticated roles) gets the server's clock as created_at and a priority of
-- at most the cap; the service side (workers, the operator's CLI, an edge function with the service key) is
-- trusted with any value. A project changes the cap by replacing tasks_producer_priority_cap().
CREATE OR REPLACE FUNCTION tasks_producer_priority_cap() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 10;
$$;

CREATE OR REPLACE FUNCTION tasks_producer_fairness() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF current_user IN ('anon', 'authenticated') THEN
        NEW.created_at := clock_timestamp();
        NEW.priority := LEAST(NEW.priority, tasks_producer_priority_cap());
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS tasks_producer_fairness ON tasks;
CREATE TRIGGER tasks_producer_fairness BEFORE INSERT ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_producer_fairness();

DO $$
BEGIN
    IF tasks_supabase_roles_exist() THEN  -- the triggers call these with the caller's rights
        GRANT EXECUTE ON FUNCTION tasks_producer_priority_cap() TO anon, authenticated;
        GRANT EXECUTE ON FUNCTION tasks_producer_fairness() TO anon, authenticated;
        GRANT EXECUTE ON FUNCTION user_api_tokens_refuse_hash() TO anon, authenticated;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT 31;
$$;
