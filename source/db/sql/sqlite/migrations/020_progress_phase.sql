-- What a running task is doing now (downloading, loading, denoising, decoding, encoding, uploading), written
-- with the progress by the heartbeat; shown by tasks list/show.
ALTER TABLE tasks ADD COLUMN progress_phase TEXT NULL;
