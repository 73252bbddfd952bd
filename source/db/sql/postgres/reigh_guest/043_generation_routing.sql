-- complete-task's generation routing (complete_task/generation.ts createGenerationFromTask), in place of 041's:
-- an 'orchestration' task type or params.skip_generation makes none; a travel_stitch / join_final_stitch whose
-- params name a parent_generation_id adds the primary variant on that generation; another row naming one is a
-- child generation under it (child_order, else segment_index, else join_index), with an 'original' variant; the
-- stitch's variant is labelled by task_types.variant_type, else 'generated'; any other row is a standalone
-- generation, placed in its shot. Left out: a variant on an existing child (child_generation_id), a variant on
-- based_on, and a regenerated task's extra variant. Only generations of the row's own project are used.
CREATE OR REPLACE FUNCTION tasks_schema_version() RETURNS integer LANGUAGE sql IMMUTABLE AS $$ SELECT 43 $$;

CREATE FUNCTION as_integer(p_text text) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_text ~ '^\d{1,9}$' THEN p_text::integer END;
$$;

CREATE OR REPLACE FUNCTION reigh_record_generation(p_task_id uuid) RETURNS uuid
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    v_task tasks;
    v_kind task_types;
    v_params jsonb;
    v_content text;
    v_parent uuid;
    v_order integer;
    v_shot uuid;
    v_generation uuid;
    v_variant uuid;
BEGIN
    SELECT * INTO v_task FROM tasks AS t WHERE t.id = p_task_id;
    SELECT * INTO v_kind FROM task_types AS tt WHERE tt.name = v_task.task_type;
    v_params := COALESCE(v_task.params, '{}');
    IF v_task.output_location IS NULL OR v_task.generation_created OR v_kind.category = 'orchestration'
       OR (v_params ->> 'skip_generation') = 'true' THEN
        RETURN NULL;
    END IF;
    v_content := COALESCE(v_kind.content_type, 'image');
    SELECT g.id INTO v_parent FROM generations AS g
     WHERE g.project_id = v_task.project_id
       AND g.id = as_uuid(COALESCE(v_params -> 'orchestration_contract' ->> 'parent_generation_id',
                                   v_params ->> 'parent_generation_id',
                                   v_params -> 'orchestrator_details' ->> 'parent_generation_id',
                                   v_params -> 'full_orchestrator_payload' ->> 'parent_generation_id'));
    IF v_parent IS NOT NULL AND v_task.task_type IN ('travel_stitch', 'join_final_stitch') THEN
        UPDATE generation_variants SET is_primary = false WHERE generation_id = v_parent AND is_primary;
        INSERT INTO generation_variants (generation_id, project_id, location, params, is_primary, variant_type)
        VALUES (v_parent, v_task.project_id, v_task.output_location,
                v_params || jsonb_build_object('source_task_id', p_task_id), true,
                COALESCE(v_kind.variant_type, 'generated'))
        RETURNING id INTO v_variant;
        UPDATE generations SET location = v_task.output_location, primary_variant_id = v_variant, updated_at = now()
         WHERE id = v_parent;
        UPDATE tasks SET generation_created = true WHERE id = p_task_id;
        RETURN v_parent;
    END IF;
    v_order := COALESCE(as_integer(v_params -> 'orchestration_contract' ->> 'child_order'),
                        as_integer(v_params ->> 'child_order'), as_integer(v_params ->> 'segment_index'),
                        as_integer(v_params ->> 'join_index'));
    INSERT INTO generations (tasks, params, location, type, project_id, name, is_child, child_order,
                             parent_generation_id)
    VALUES (jsonb_build_array(p_task_id::text), v_params, v_task.output_location, v_content, v_task.project_id,
            COALESCE(v_params ->> 'generation_name', v_params -> 'orchestrator_details' ->> 'generation_name'),
            v_parent IS NOT NULL, CASE WHEN v_parent IS NOT NULL THEN v_order END, v_parent)
    RETURNING id INTO v_generation;
    INSERT INTO generation_variants (generation_id, project_id, location, params, is_primary, variant_type)
    VALUES (v_generation, v_task.project_id, v_task.output_location,
            v_params || jsonb_build_object('source_task_id', p_task_id, 'created_from', 'generation_original'),
            true, 'original')
    RETURNING id INTO v_variant;
    UPDATE generations SET primary_variant_id = v_variant WHERE id = v_generation;
    IF v_parent IS NULL THEN
        v_shot := as_uuid(COALESCE(v_params ->> 'shot_id', v_params -> 'orchestrator_details' ->> 'shot_id'));
        IF v_shot IS NOT NULL AND EXISTS (SELECT 1 FROM shots AS s WHERE s.id = v_shot AND s.project_id = v_task.project_id) THEN
            PERFORM add_generation_to_shot(v_shot, v_generation, (v_params ->> 'add_in_position') IS DISTINCT FROM 'false');
        END IF;
    END IF;
    UPDATE tasks SET generation_created = true WHERE id = p_task_id;
    RETURN v_generation;
END $$;

DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA %I FROM PUBLIC', current_schema());
END
$$;
