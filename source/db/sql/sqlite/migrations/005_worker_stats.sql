-- What each worker's generation queue has done (tasks, failures, model loads and switches), as JSON.
ALTER TABLE workers ADD COLUMN stats TEXT NULL;
