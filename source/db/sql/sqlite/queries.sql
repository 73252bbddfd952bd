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
-- Ready now, or out of back-off and waiting for the next claim to release it.
SELECT 1 FROM ready_tasks
UNION ALL
SELECT 1 FROM tasks INDEXED BY tasks_run_after_idx
WHERE run_after IS NOT NULL AND run_after <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
  AND status = 'Queued' AND blocked_by_dependency = 0
LIMIT 1;

-- name: release_due_rows
-- Rows whose back-off is over join the ready rows (run within the claim's own write transaction).
UPDATE tasks INDEXED BY tasks_run_after_idx SET run_after = NULL
WHERE run_after IS NOT NULL AND run_after <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now') AND status = 'Queued';

-- name: claim_next_task
-- Within one priority, rows for the resident model go first unless an older row has waited past
-- the affinity window. json_valid guards the model expression: a row with broken params JSON must still be
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
-- by rowid: a row a producer left without an id (NULL) must still be claimed, and failed. :picked_row: the
-- row pick_capable_task chose for a worker with capabilities (it runs first, in the same transaction).
WHERE rowid = CASE WHEN :picked_row IS NOT NULL THEN :picked_row ELSE (
    -- the head of the queue (tasks_ready_order_idx), and, while it has not waited past the affinity
    -- window, the oldest row of its priority for the resident model or for a resident task type naming no
    -- model (one probe of a 022 index each): no sort of the whole queue
    WITH head AS (
        SELECT t.row_id AS row_id, t.priority, t.created_at FROM ready_tasks AS t
        ORDER BY t.priority DESC, t.created_at, t.row_id
        LIMIT 1
    ),
    affine(row_id) AS (
        SELECT (SELECT t.row_id FROM ready_tasks AS t
                WHERE CASE WHEN json_valid(t.params) THEN json_extract(t.params, '$.model') END IS NOT NULL
                  AND CASE WHEN json_valid(t.params) THEN json_extract(t.params, '$.model') END = :resident_model
                  AND t.priority = head.priority
                ORDER BY t.created_at, t.row_id LIMIT 1)
        FROM head
        WHERE :resident_model IS NOT NULL
          AND head.created_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', :affinity_modifier)
        UNION ALL
        SELECT (SELECT t.row_id FROM ready_tasks AS t
                WHERE CASE WHEN json_valid(t.params) THEN json_extract(t.params, '$.model') END IS NULL
                  AND t.task_type = rt.value AND t.priority = head.priority
                ORDER BY t.created_at, t.row_id LIMIT 1)
        FROM head, json_each(:resident_task_types) AS rt
        WHERE :resident_model IS NOT NULL
          AND head.created_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', :affinity_modifier)
    )
    SELECT COALESCE((SELECT t.rowid FROM affine JOIN tasks AS t ON t.rowid = affine.row_id
                     ORDER BY t.created_at, t.rowid LIMIT 1),
                    (SELECT head.row_id FROM head))
) END
AND status = 'Queued'
RETURNING rowid AS row_number, *;

-- name: pick_capable_task
-- The row a worker with capabilities claims (models/ task_types/ modelless_task_types: JSON arrays, NULL =
-- unrestricted; see Capabilities): the first ready row of each allowed group, each one probe of a
-- tasks_queued_* index (022), then the best of those heads in the claim's own order (priority, model
-- affinity, age). The model expression is spelt as in the indexes.
WITH heads(row_id) AS (
    -- each allowed model: its first row whose task type is allowed too
    SELECT (SELECT t.row_id FROM ready_tasks AS t
            WHERE CASE WHEN json_valid(t.params) THEN json_extract(t.params, '$.model') END IS NOT NULL
              AND CASE WHEN json_valid(t.params) THEN json_extract(t.params, '$.model') END = m.value
              AND (:task_types IS NULL OR t.task_type IN (SELECT value FROM json_each(:task_types)))
            ORDER BY t.priority DESC, t.created_at, t.row_id LIMIT 1)
    FROM json_each(:models) AS m
    UNION ALL
    -- any model, restricted task types (and the resident model, for the affinity order): per task type /
    -- the resident model, the first row naming a model
    SELECT (SELECT t.row_id FROM ready_tasks AS t
            WHERE CASE WHEN json_valid(t.params) THEN json_extract(t.params, '$.model') END IS NOT NULL
              AND t.task_type = tt.value
            ORDER BY t.priority DESC, t.created_at, t.row_id LIMIT 1)
    FROM json_each(CASE WHEN :models IS NULL THEN :task_types END) AS tt
    UNION ALL
    SELECT (SELECT t.row_id FROM ready_tasks AS t
            WHERE CASE WHEN json_valid(t.params) THEN json_extract(t.params, '$.model') END IS NOT NULL
              AND CASE WHEN json_valid(t.params) THEN json_extract(t.params, '$.model') END = :resident_model
              AND (:task_types IS NULL OR t.task_type IN (SELECT value FROM json_each(:task_types)))
            ORDER BY t.priority DESC, t.created_at, t.row_id LIMIT 1)
    WHERE :models IS NULL AND :resident_model IS NOT NULL
    UNION ALL
    -- any model and any task type (only model-less rows restricted): one walk over the rows naming a model
    SELECT (SELECT t.row_id FROM ready_tasks AS t
            WHERE CASE WHEN json_valid(t.params) THEN json_extract(t.params, '$.model') END IS NOT NULL
            ORDER BY t.priority DESC, t.created_at, t.row_id LIMIT 1)
    WHERE :models IS NULL AND :task_types IS NULL
    UNION ALL
    -- each allowed model-less task type: its first row naming no model
    SELECT (SELECT t.row_id FROM ready_tasks AS t
            WHERE CASE WHEN json_valid(t.params) THEN json_extract(t.params, '$.model') END IS NULL
              AND t.task_type = tt.value
            ORDER BY t.priority DESC, t.created_at, t.row_id LIMIT 1)
    FROM json_each(:modelless_task_types) AS tt
    UNION ALL
    SELECT (SELECT t.row_id FROM ready_tasks AS t
            WHERE CASE WHEN json_valid(t.params) THEN json_extract(t.params, '$.model') END IS NULL
            ORDER BY t.priority DESC, t.created_at, t.row_id LIMIT 1)
    WHERE :modelless_task_types IS NULL
)
SELECT t.rowid AS row_number FROM heads JOIN tasks AS t ON t.rowid = heads.row_id
ORDER BY t.priority DESC,
         CASE
             WHEN t.created_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', :affinity_modifier) THEN 0
             WHEN :resident_model IS NOT NULL
                  AND CASE WHEN json_valid(t.params) THEN json_extract(t.params, '$.model') END = :resident_model
                  THEN 0
             WHEN :resident_model IS NOT NULL
                  AND CASE WHEN json_valid(t.params) THEN json_extract(t.params, '$.model') END IS NULL
                  AND t.task_type IN (SELECT value FROM json_each(:resident_task_types)) THEN 0
             ELSE 1
         END,
         t.created_at, t.rowid
LIMIT 1;

-- name: fail_unrunnable_claim
-- The row just claimed cannot be read or run (see Task.unrunnable_reason): failed in the claim's own
-- transaction, so no worker ever runs it and nobody waits for its lease.
UPDATE tasks
SET status = 'Failed', error_message = :error_message, lease_expires_at = NULL,
    generation_processed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE rowid = :row_number AND status = 'In Progress';

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
    output_location = COALESCE(:output_location, output_location),
    lease_expires_at = NULL,
    generation_processed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE id = :id AND worker_id = :worker_id AND status = 'In Progress'
RETURNING id;

-- name: requeue_task
-- Graceful shutdown gives the row back without counting the attempt, :free_requeues times; after that
-- each one counts, and a row whose attempts are used up fails instead of cycling forever.
UPDATE tasks
SET status = CASE WHEN shutdown_requeues >= :free_requeues AND attempts >= max_attempts
                  THEN 'Failed' ELSE 'Queued' END,
    error_message = CASE WHEN shutdown_requeues >= :free_requeues AND attempts >= max_attempts
        THEN 'interrupted by a worker shutdown ' || (shutdown_requeues + 1) || ' times; '
             || attempts || ' of ' || max_attempts || ' attempts used'
        ELSE error_message END,
    generation_processed_at = CASE WHEN shutdown_requeues >= :free_requeues AND attempts >= max_attempts
        THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now') ELSE generation_processed_at END,
    worker_id = CASE WHEN shutdown_requeues >= :free_requeues AND attempts >= max_attempts
        THEN worker_id ELSE NULL END,
    attempts = CASE WHEN shutdown_requeues >= :free_requeues THEN attempts ELSE MAX(attempts - 1, 0) END,
    shutdown_requeues = shutdown_requeues + 1,
    lease_expires_at = NULL, heartbeat_at = NULL, progress = NULL,
    generation_started_at = CASE WHEN shutdown_requeues >= :free_requeues AND attempts >= max_attempts
        THEN generation_started_at ELSE NULL END,
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE id = :id AND worker_id = :worker_id AND status = 'In Progress'
RETURNING id, status;

-- name: cancel_task
UPDATE tasks
SET status = 'Cancelled', lease_expires_at = NULL, awaiting_children = 0,
    error_message = COALESCE(error_message, 'cancelled by request'),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE id = :id AND status IN ('Queued', 'In Progress')
RETURNING id;

-- name: retry_task
UPDATE tasks
SET status = 'Queued', attempts = 0, shutdown_requeues = 0, worker_id = NULL, lease_expires_at = NULL, heartbeat_at = NULL,
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
-- unless it is an orchestrator parked until its children finish it, or an older worker's orchestrator
-- whose older final child (travel_stitch / dp_final_gen, naming it in its params) has not run yet: that
-- child completes it (older_shapes.py), as the older worker did.
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
  AND NOT (lease_expires_at IS NULL
           AND task_type IN ('travel_orchestrator', 'different_perspective_orchestrator')
           AND EXISTS (SELECT 1 FROM tasks AS c
                       WHERE c.status IN ('Queued', 'In Progress') AND c.parent_task_id IS NULL
                         AND c.task_type IN ('travel_stitch', 'dp_final_gen')
                         AND instr(CAST(c.params AS TEXT), tasks.id) > 0))
RETURNING id, status, attempts;

-- name: fail_orphaned_dependants
-- One level of the cascade; the store repeats it until no row changes, so a chain fails link by link
-- and each error names its own dependency.
UPDATE tasks
SET status = 'Failed',
    error_message = COALESCE(
        (SELECT 'dependency ' || d.id || ' ended ' || d.status
                || COALESCE(': ' || substr(d.error_message, 1, 500), '')
         FROM tasks AS d WHERE d.id = tasks.dependant_on AND (tasks.project_id IS NULL OR d.project_id = tasks.project_id)),
        'dependency ' || tasks.dependant_on || ' does not exist'),
    generation_processed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE status = 'Queued' AND dependant_on IS NOT NULL
  -- a dependency of another project is one that does not exist (its status and error stay its own)
  AND (EXISTS (SELECT 1 FROM tasks AS d WHERE d.id = tasks.dependant_on AND d.status IN ('Failed', 'Cancelled')
               AND (tasks.project_id IS NULL OR d.project_id = tasks.project_id))
       -- a producer may insert a child a moment before its parent: give the parent a minute to appear
       OR (NOT EXISTS (SELECT 1 FROM tasks AS d WHERE d.id = tasks.dependant_on AND (tasks.project_id IS NULL OR d.project_id = tasks.project_id))
           AND (created_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-60 seconds')
                -- a created_at that is not a timestamp gives no grace (it would compare as never old)
                OR typeof(created_at) <> 'text' OR created_at NOT LIKE '____-__-__T__:__:__.___Z')))
RETURNING id, dependant_on;

-- name: fail_unknown_status
-- Rows that can never run, found by the periodic sweep (fail_unrunnable_tasks), each with its reason.
-- A status no worker looks for ('queued', 'pending', ...) or a dependency that is not text.
UPDATE tasks
SET status = 'Failed',
    error_message = CASE WHEN status NOT IN ('Queued', 'In Progress', 'Complete', 'Failed', 'Cancelled')
        THEN 'status ' || quote(status) || ' is not one of Queued, In Progress, Complete, Failed, Cancelled'
        ELSE 'dependant_on is a BLOB, not text: ' || quote(dependant_on) END,
    lease_expires_at = NULL,
    generation_processed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE status NOT IN ('Queued', 'In Progress', 'Complete', 'Failed', 'Cancelled')
   OR (status = 'Queued' AND typeof(dependant_on) NOT IN ('text', 'null'))
RETURNING id, error_message AS reason;

-- name: fail_childless_parents
-- Waiting for children it does not have: nothing would ever finish it (and the lease sweep skips it).
UPDATE tasks
SET status = 'Failed', error_message = 'awaiting children but has none', awaiting_children = 0,
    lease_expires_at = NULL,
    generation_processed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE status IN ('Queued', 'In Progress') AND awaiting_children <> 0
  AND NOT EXISTS (SELECT 1 FROM tasks AS c WHERE c.parent_task_id = tasks.id)
RETURNING id, error_message AS reason;

-- name: fail_dependency_cycles
-- Queued rows waiting on Queued rows that, followed link by link, never reach a row that can run: the
-- members of a cycle fail with the cycle spelled out; the rows behind a cycle then fail by the cascade
-- (their dependency ended Failed). Only rows blocked by a Queued row are walked.
WITH RECURSIVE
blocked(id, dependant_on) AS MATERIALIZED (
    SELECT t.id, t.dependant_on FROM tasks AS t JOIN tasks AS d ON d.id = t.dependant_on
    WHERE t.status = 'Queued' AND d.status = 'Queued'
),
-- the dependencies of blocked rows that are not blocked themselves: where the chains can start
heads(id) AS MATERIALIZED (
    SELECT b.dependant_on FROM blocked AS b
    EXCEPT
    SELECT b.id FROM blocked AS b
),
runnable(id) AS (
    SELECT b.id FROM heads AS h JOIN tasks AS b ON b.dependant_on = h.id WHERE b.status = 'Queued'
    UNION
    -- down the chains through the dependant_on index (one probe per link)
    SELECT b.id FROM runnable AS r JOIN tasks AS b ON b.dependant_on = r.id WHERE b.status = 'Queued'
),
stuck(id, dependant_on) AS MATERIALIZED (
    SELECT b.id, b.dependant_on FROM blocked AS b WHERE b.id IN (SELECT id FROM blocked EXCEPT SELECT id FROM runnable)
),
walk(start, cur, path, steps) AS (
    SELECT s.id, s.dependant_on, s.id, 0 FROM stuck AS s
    UNION ALL
    SELECT w.start, s.dependant_on, w.path || ' → ' || s.id, w.steps + 1
    FROM walk AS w JOIN stuck AS s ON s.id = w.cur
    WHERE w.cur <> w.start AND w.steps < (SELECT count(*) FROM stuck)
),
cycles(id, message) AS (
    SELECT w.start, 'dependency cycle: ' || w.path || ' → ' || w.start FROM walk AS w WHERE w.cur = w.start
)
UPDATE tasks
SET status = 'Failed', error_message = (SELECT c.message FROM cycles AS c WHERE c.id = tasks.id),
    generation_processed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE status = 'Queued' AND id IN (SELECT c.id FROM cycles AS c)
RETURNING id, error_message AS reason;

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
-- Only children in the parent's own project: a link from another project is not honoured.
SELECT c.* FROM tasks AS c JOIN tasks AS p ON p.id = :parent_task_id
WHERE c.parent_task_id = :parent_task_id AND (c.project_id IS NULL OR c.project_id = p.project_id) ORDER BY c.created_at, c.rowid;

-- name: foreign_child_ids
-- Ids of the children being inserted (:ids, a JSON array) that a row other than that child already holds.
SELECT t.id FROM tasks AS t JOIN json_each(:ids) AS wanted ON t.id = wanted.value
WHERE t.parent_task_id IS NOT :parent_task_id OR t.project_id IS NOT :project_id;

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
                       AND (c.project_id IS NULL OR c.project_id = tasks.project_id)
                     ORDER BY c.updated_at, c.rowid LIMIT 1),
    awaiting_children = 0, lease_expires_at = NULL,
    generation_processed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE status = 'In Progress'
  AND EXISTS (SELECT 1 FROM tasks AS c WHERE c.parent_task_id = tasks.id AND c.status IN ('Failed', 'Cancelled')
              AND (c.project_id IS NULL OR c.project_id = tasks.project_id))
RETURNING id,
    (SELECT c.id FROM tasks AS c WHERE c.parent_task_id = tasks.id AND c.status IN ('Failed', 'Cancelled')
       AND (c.project_id IS NULL OR c.project_id = tasks.project_id)
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
  AND EXISTS (SELECT 1 FROM tasks AS p WHERE p.id = tasks.parent_task_id AND p.status IN ('Failed', 'Cancelled')
              AND (tasks.project_id IS NULL OR p.project_id = tasks.project_id))
RETURNING id, parent_task_id;

-- name: list_tasks
SELECT * FROM tasks
WHERE (:status IS NULL OR status = :status) AND (:task_type IS NULL OR task_type = :task_type)
ORDER BY created_at DESC, rowid DESC
LIMIT :limit;

-- name: list_task_summaries
-- No params or result: the prompt's first characters only (json_valid: a row with broken params still lists).
SELECT id, task_type, status, priority, progress, worker_id, created_at, updated_at, generation_started_at,
       generation_processed_at, output_location, substr(error_message, 1, 2000) AS error_message, parent_task_id,
       CASE WHEN json_valid(params) AND json_type(params, '$.prompt') = 'text'
            THEN substr(json_extract(params, '$.prompt'), 1, :prompt_chars) END AS prompt
FROM tasks
WHERE (:status IS NULL OR status = :status)
ORDER BY created_at DESC, rowid DESC
LIMIT :limit;

-- name: count_by_status
-- quote(): a status that is not text (a BLOB) still gets a readable name
SELECT CASE WHEN typeof(status) = 'text' THEN status ELSE quote(status) END AS status, COUNT(*) AS n
FROM tasks GROUP BY 1;

-- name: count_queued_by_kind
-- `tasks stats` / `tasks list --stuck`: the Queued rows by (task type, params.model).
SELECT task_type, CASE WHEN json_valid(params) THEN json_extract(params, '$.model') END AS model, COUNT(*) AS n,
       MIN(created_at) AS oldest
FROM tasks WHERE status = 'Queued' GROUP BY 1, 2 ORDER BY 3 DESC;

-- name: count_by_worker
SELECT worker_id, status, COUNT(*) AS n FROM tasks WHERE worker_id IS NOT NULL GROUP BY worker_id, status;

-- name: register_worker
INSERT INTO workers (id, host, pid, gpu_name, gpu_memory_gb, capabilities, status, started_at, last_heartbeat)
VALUES (:id, :host, :pid, :gpu_name, :gpu_memory_gb, :capabilities, 'running',
        strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
ON CONFLICT (id) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, gpu_name = excluded.gpu_name,
    gpu_memory_gb = excluded.gpu_memory_gb, capabilities = excluded.capabilities, status = 'running',
    resident_model = NULL,
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
-- then Failed with the last error (also in output_location with :error_in_output_location, the older
-- worker's convention: --legacy-output-location).
UPDATE tasks
SET status = CASE WHEN attempts >= max_attempts THEN 'Failed' ELSE 'Queued' END,
    worker_id = CASE WHEN attempts >= max_attempts THEN worker_id END,
    run_after = CASE WHEN attempts < max_attempts
                     THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now', :delay_modifier) END,
    error_message = CASE WHEN attempts >= max_attempts
                         THEN 'gave up after ' || attempts || ' attempts: ' || :error_message
                         ELSE :error_message END,
    output_location = CASE WHEN attempts >= max_attempts AND :error_in_output_location
                           THEN 'gave up after ' || attempts || ' attempts: ' || :error_message
                           ELSE output_location END,
    lease_expires_at = NULL, heartbeat_at = NULL, progress = NULL,
    generation_processed_at = CASE WHEN attempts >= max_attempts
                                   THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END,
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE id = :id AND worker_id = :worker_id AND status = 'In Progress'
RETURNING status, run_after;

-- name: housekeeping_turn
-- The turn for a housekeeping job, when nobody took it within the interval (inside a write transaction).
INSERT INTO tasks_housekeeping (job, last_run_at, last_worker_id)
VALUES (:job, (julianday('now') - 2440587.5) * 86400.0, :worker_id)
ON CONFLICT (job) DO UPDATE SET last_run_at = excluded.last_run_at, last_worker_id = excluded.last_worker_id
WHERE tasks_housekeeping.last_run_at <= excluded.last_run_at - :interval_seconds
RETURNING 1;

-- name: errors_to_output_location
-- --legacy-output-location for rows housekeeping failed: the error text where older frontends read it.
UPDATE tasks SET output_location = error_message
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'Failed' AND error_message IS NOT NULL
  AND output_location IS NOT error_message
RETURNING id;

-- name: record_webhook_deliveries
-- result.webhooks of a finished row this worker ran (its webhooks are delivered after the row is written).
UPDATE tasks SET result = json_set(coalesce(result, '{}'), '$.webhooks', json(:deliveries))
WHERE id = :id AND worker_id = :worker_id AND status IN ('Complete', 'Failed', 'Cancelled')
RETURNING id;
