"""Every task runs a heartbeat thread, and each thread that touches the SQLite store opens its own connection:
a connection must end with its thread, or a long-running worker keeps one open file (and its page cache) per
task it ever ran, until it runs out of file descriptors."""

from __future__ import annotations

import threading

import psutil

from source.db.sqlite import SqliteTaskStore


def _open_db_files(path) -> int:
    return sum(1 for f in psutil.Process().open_files() if f.path == str(path))


def test_a_threads_connection_is_closed_when_the_thread_ends(tmp_path):
    store = SqliteTaskStore(tmp_path / "tasks.db")
    store.migrate()
    store.stats()  # this thread's connection
    before = _open_db_files(tmp_path / "tasks.db")
    for _ in range(40):  # what 40 tasks' heartbeat threads do
        thread = threading.Thread(target=store.stats)
        thread.start()
        thread.join()
    assert _open_db_files(tmp_path / "tasks.db") <= before + 1
    store.stats()  # the store still works, and close() still closes what is open
    store.close()
    assert _open_db_files(tmp_path / "tasks.db") == 0
