-- Named queries of the SQLite task store. Timestamps are ISO-8601 UTC text with milliseconds,
-- always taken from SQLite's clock so every process compares against the same one.

-- name: insert_task
INSERT INTO tasks (id, task_type, params, status, dependant_on, project_id, priority, max_attempts,
                   attempts, created_at, updated_at)
VALUES (:id, :task_type, :params, 'Queued', :dependant_on, :project_id, :priority, :max_attempts,
        0, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

-- name: get_task
SELECT * FROM tasks WHERE id = :id;

-- name: task_status
SELECT status, worker_id FROM tasks WHERE id = :id;

-- name: has_claimable_task
SELECT 1 FROM tasks AS t
WHERE t.status = 'Queued' AND (t.run_after IS NULL OR t.run_after <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
  AND (t.dependant_on IS NULL
       OR EXISTS (SELECT 1 FROM tasks AS d WHERE d.id = t.dependant_on AND d.status = 'Complete'))
LIMIT 1;

-- name: claim_next_task
-- Within one priority, rows for the resident model go first unless an older row has waited past
-- the affinity window. json_valid guards the sort: a row with broken params JSON must still be
-- claimable (so it can be failed with a message) and must never break the claim for everyone.
UPDATE tasks
SET status = 'In Progress',
    worker_id = :worker_id,
    attempts = attempts + 1,
    lease_expires_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', :lease_modifier),
    heartbeat_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    generation_started_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    generation_processed_at = NULL,
    progress = 0,
    error_message = NULL,
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE id = (
    SELECT t.id FROM tasks AS t
    WHERE t.status = 'Queued' AND (t.run_after IS NULL OR t.run_after <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
      AND (t.dependant_on IS NULL
           OR EXISTS (SELECT 1 FROM tasks AS d WHERE d.id = t.dependant_on AND d.status = 'Complete'))
    ORDER BY t.priority DESC,
             CASE
                 WHEN t.created_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', :affinity_modifier) THEN 0
                 WHEN :resident_model IS NOT NULL AND json_valid(t.params)
                      AND json_extract(t.params, '$.model') = :resident_model THEN 0
                 WHEN :resident_model IS NOT NULL AND json_valid(t.params)
                      AND json_extract(t.params, '$.model') IS NULL
                      AND t.task_type IN (SELECT value FROM json_each(:resident_task_types)) THEN 0
                 ELSE 1
             END,
             t.created_at, t.rowid
    LIMIT 1
)
AND status = 'Queued'
RETURNING *;

-- name: heartbeat
UPDATE tasks
SET lease_expires_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', :lease_modifier),
    heartbeat_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    progress = COALESCE(:progress, progress),
    progress_phase = COALESCE(:phase, progress_phase)
WHERE id = :id AND worker_id = :worker_id AND status = 'In Progress'
RETURNING id;

-- name: complete_task
UPDATE tasks
SET status = 'Complete', output_location = :output_location, result = :result, progress = 1.0,
    error_message = NULL, lease_expires_at = NULL,
    generation_processed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE id = :id AND worker_id = :worker_id AND status = 'In Progress'
RETURNING id;

-- name: fail_task
UPDATE tasks
SET status = 'Failed', error_message = :error_message, result = COALESCE(:result, result),
    lease_expires_at = NULL,
    generation_processed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE id = :id AND worker_id = :worker_id AND status = 'In Progress'
RETURNING id;

-- name: requeue_task
UPDATE tasks
SET status = 'Queued', worker_id = NULL, attempts = MAX(attempts - 1, 0), lease_expires_at = NULL,
    heartbeat_at = NULL, progress = NULL, generation_started_at = NULL,
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE id = :id AND worker_id = :worker_id AND status = 'In Progress'
RETURNING id;

-- name: cancel_task
UPDATE tasks
SET status = 'Cancelled', lease_expires_at = NULL, awaiting_children = 0,
    error_message = COALESCE(error_message, 'cancelled by request'),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE id = :id AND status IN ('Queued', 'In Progress')
RETURNING id;

-- name: retry_task
UPDATE tasks
SET status = 'Queued', attempts = 0, worker_id = NULL, lease_expires_at = NULL, heartbeat_at = NULL,
    awaiting_children = 0,
    progress = NULL, error_message = NULL, generation_started_at = NULL, generation_processed_at = NULL,
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE id = :id AND status IN ('Failed', 'Cancelled')
RETURNING id;

-- name: retry_ended_children
-- Retrying a parent retries its children that ended Failed/Cancelled (the Complete ones are kept).
UPDATE tasks
SET status = 'Queued', attempts = 0, worker_id = NULL, lease_expires_at = NULL, heartbeat_at = NULL,
    progress = NULL, error_message = NULL, generation_started_at = NULL, generation_processed_at = NULL,
    awaiting_children = 0, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE parent_task_id = :parent_task_id AND status IN ('Failed', 'Cancelled')
RETURNING id;

-- name: reclaim_expired_leases
-- A missing lease on an In Progress row means a row left behind by the older worker: reclaim it too,
-- unless it is an orchestrator parked until its children finish it.
UPDATE tasks
SET status = CASE WHEN attempts >= max_attempts THEN 'Failed' ELSE 'Queued' END,
    error_message = CASE WHEN attempts >= max_attempts
        THEN 'lease expired after ' || attempts || ' attempts (last worker: ' || COALESCE(worker_id, 'unknown') || ')'
        ELSE error_message END,
    worker_id = CASE WHEN attempts >= max_attempts THEN worker_id ELSE NULL END,
    lease_expires_at = NULL,
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE status = 'In Progress' AND awaiting_children = 0
  AND (lease_expires_at IS NULL OR lease_expires_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
RETURNING id, status, attempts;

-- name: fail_orphaned_dependants
-- One level of the cascade; the store repeats it until no row changes, so a chain fails link by link
-- and each error names its own dependency.
UPDATE tasks
SET status = 'Failed',
    error_message = COALESCE(
        (SELECT 'dependency ' || d.id || ' ended ' || d.status
                || COALESCE(': ' || substr(d.error_message, 1, 500), '')
         FROM tasks AS d WHERE d.id = tasks.dependant_on),
        'dependency ' || tasks.dependant_on || ' does not exist'),
    generation_processed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE status = 'Queued' AND dependant_on IS NOT NULL
  AND (EXISTS (SELECT 1 FROM tasks AS d WHERE d.id = tasks.dependant_on AND d.status IN ('Failed', 'Cancelled'))
       -- a producer may insert a child a moment before its parent: give the parent a minute to appear
       OR (NOT EXISTS (SELECT 1 FROM tasks AS d WHERE d.id = tasks.dependant_on)
           AND created_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-60 seconds')))
RETURNING id, dependant_on;

-- name: insert_child_task
-- Idempotent: a child that already exists (same parent and key, or same derived id) is left as it is.
INSERT INTO tasks (id, task_type, params, status, dependant_on, project_id, priority, max_attempts,
                   attempts, parent_task_id, child_key, created_at, updated_at)
VALUES (:id, :task_type, :params, 'Queued', :dependant_on, :project_id, :priority, :max_attempts,
        0, :parent_task_id, :child_key,
        strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
ON CONFLICT DO NOTHING
RETURNING id;

-- name: list_child_tasks
SELECT * FROM tasks WHERE parent_task_id = :parent_task_id ORDER BY created_at, rowid;

-- name: park_awaiting_children
-- The orchestrator's own work is done; its last child completes it (complete_parent).
UPDATE tasks
SET awaiting_children = 1, result = :result, lease_expires_at = NULL, heartbeat_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE id = :id AND worker_id = :worker_id AND status = 'In Progress'
RETURNING id;

-- name: complete_parent
-- Any worker may complete a parent (its last child runs anywhere); only while it is still In Progress.
-- The child's result is merged over what the parent recorded when it parked (its children's ids).
UPDATE tasks
SET status = 'Complete', output_location = :output_location,
    result = json_patch(CASE WHEN json_valid(result) THEN result ELSE '{}' END, :result), progress = 1.0,
    error_message = NULL, lease_expires_at = NULL, awaiting_children = 0,
    generation_processed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE id = :id AND status = 'In Progress'
RETURNING id;

-- name: fail_parents_of_ended_children
-- A parent still running (or parked) fails as soon as one of its children ends Failed/Cancelled; the
-- error names the child that ended first (the cause, not the dependants that failed after it).
UPDATE tasks
SET status = 'Failed',
    error_message = (SELECT 'child ' || c.task_type || ' ' || c.id || ' ended ' || c.status
                            || COALESCE(': ' || substr(c.error_message, 1, 500), '')
                     FROM tasks AS c
                     WHERE c.parent_task_id = tasks.id AND c.status IN ('Failed', 'Cancelled')
                     ORDER BY c.updated_at, c.rowid LIMIT 1),
    awaiting_children = 0, lease_expires_at = NULL,
    generation_processed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE status = 'In Progress'
  AND EXISTS (SELECT 1 FROM tasks AS c WHERE c.parent_task_id = tasks.id AND c.status IN ('Failed', 'Cancelled'))
RETURNING id,
    (SELECT c.id FROM tasks AS c WHERE c.parent_task_id = tasks.id AND c.status IN ('Failed', 'Cancelled')
     ORDER BY c.updated_at, c.rowid LIMIT 1) AS cause_id;

-- name: cancel_children_of_ended_parents
-- Unfinished children of a Failed/Cancelled parent are cancelled (a running one stops at its next
-- step: its worker sees the Cancelled status).
UPDATE tasks
SET status = 'Cancelled', lease_expires_at = NULL, awaiting_children = 0,
    error_message = COALESCE(
        (SELECT 'parent ' || p.id || ' ended ' || p.status || COALESCE(': ' || substr(p.error_message, 1, 500), '')
         FROM tasks AS p WHERE p.id = tasks.parent_task_id), 'parent ended'),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE status IN ('Queued', 'In Progress') AND parent_task_id IS NOT NULL
  AND EXISTS (SELECT 1 FROM tasks AS p WHERE p.id = tasks.parent_task_id AND p.status IN ('Failed', 'Cancelled'))
RETURNING id, parent_task_id;

-- name: list_tasks
SELECT * FROM tasks
WHERE (:status IS NULL OR status = :status) AND (:task_type IS NULL OR task_type = :task_type)
ORDER BY created_at DESC, rowid DESC
LIMIT :limit;

-- name: count_by_status
SELECT status, COUNT(*) AS n FROM tasks GROUP BY status;

-- name: count_by_worker
SELECT worker_id, status, COUNT(*) AS n FROM tasks WHERE worker_id IS NOT NULL GROUP BY worker_id, status;

-- name: register_worker
INSERT INTO workers (id, host, pid, gpu_name, gpu_memory_gb, status, started_at, last_heartbeat)
VALUES (:id, :host, :pid, :gpu_name, :gpu_memory_gb, 'running',
        strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
ON CONFLICT (id) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, gpu_name = excluded.gpu_name,
    gpu_memory_gb = excluded.gpu_memory_gb, status = 'running', resident_model = NULL,
    current_task_id = NULL, started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat;

-- name: touch_worker
UPDATE workers
SET resident_model = :resident_model, current_task_id = :current_task_id, status = :status,
    stats = COALESCE(:stats, stats),
    last_heartbeat = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE id = :id;

-- name: list_workers
SELECT *, CASE WHEN status = 'running'
                    AND last_heartbeat >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', :alive_modifier)
               THEN 1 ELSE 0 END AS alive
FROM workers ORDER BY started_at DESC;

-- name: purgeable_tasks
-- tasks purge: ended rows older than the cut-off, except one an unfinished row still needs (its
-- dependency or its parent). purge_tasks deletes exactly these.
SELECT t.id, t.status, t.output_location FROM tasks AS t
WHERE t.status IN (SELECT value FROM json_each(:statuses))
  AND t.status IN ('Complete', 'Failed', 'Cancelled')
  AND COALESCE(t.updated_at, t.created_at) < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', :age_modifier)
  AND NOT EXISTS (SELECT 1 FROM tasks AS c
                  WHERE (c.dependant_on = t.id OR c.parent_task_id = t.id)
                    AND c.status IN ('Queued', 'In Progress'))
ORDER BY t.updated_at;

-- name: purge_tasks
DELETE FROM tasks WHERE id IN (
SELECT t.id FROM tasks AS t
WHERE t.status IN (SELECT value FROM json_each(:statuses))
  AND t.status IN ('Complete', 'Failed', 'Cancelled')
  AND COALESCE(t.updated_at, t.created_at) < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', :age_modifier)
  AND NOT EXISTS (SELECT 1 FROM tasks AS c
                  WHERE (c.dependant_on = t.id OR c.parent_task_id = t.id)
                    AND c.status IN ('Queued', 'In Progress'))
)
RETURNING id, status, output_location;

-- name: retry_later
-- A transient failure: back to Queued, claimable from now + the backoff delay, until max_attempts are used;
-- then Failed with the last error.
UPDATE tasks
SET status = CASE WHEN attempts >= max_attempts THEN 'Failed' ELSE 'Queued' END,
    worker_id = CASE WHEN attempts >= max_attempts THEN worker_id END,
    run_after = CASE WHEN attempts < max_attempts
                     THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now', :delay_modifier) END,
    error_message = CASE WHEN attempts >= max_attempts
                         THEN 'gave up after ' || attempts || ' attempts: ' || :error_message
                         ELSE :error_message END,
    lease_expires_at = NULL, heartbeat_at = NULL, progress = NULL,
    generation_processed_at = CASE WHEN attempts >= max_attempts
                                   THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END,
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE id = :id AND worker_id = :worker_id AND status = 'In Progress'
RETURNING status, run_after;
