-- One row per worker process: what it runs on, what it holds, when it was last seen.
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    host TEXT NULL,
    pid INTEGER NULL,
    gpu_name TEXT NULL,
    gpu_memory_gb REAL NULL,
    resident_model TEXT NULL,
    current_task_id TEXT NULL,
    status TEXT NOT NULL DEFAULT 'running',
    started_at TEXT NOT NULL,
    last_heartbeat TEXT NOT NULL
);
