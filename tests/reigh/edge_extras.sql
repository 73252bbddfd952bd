-- What the edge-function tests need beside tests/reigh/reigh_schema.sql: one more of Reigh's API-run task types,
-- one this worker has no handler for (video_enhance, 20260129204537_add_video_enhance_task_type: run_type 'api').
INSERT INTO task_types (name, run_type, category, display_name, billing_type, base_cost_per_second, unit_cost,
                        content_type)
VALUES ('video_enhance', 'api', 'processing', 'Video Enhance (API)', 'per_unit', 0, 0.1, 'video');
