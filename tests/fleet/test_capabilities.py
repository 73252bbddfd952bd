"""Capabilities in the claim (issue 18): a worker claims only rows whose task type and model it can run, on every
backend with the same rule; the claim stays index-backed; the dispatcher wakes only a worker that can run the
row; rows nobody live can run are reported with the reason; the worker's flags and GPU decide its lists."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from source.cli.tasks import cli
from source.db.models import Capabilities, NewTask, TaskStatus, WorkerInfo
from source.worker.capabilities import CapabilityError, ModelFit, resolve_capabilities
from tests.helpers import run_worker, start_worker, wait_for

SMALL_BOX = Capabilities(task_types=("t2v", "ping"), models=("small",), modelless_task_types=("ping",))


def _claim_all(store, worker_id: str, capabilities: Capabilities, **kwargs) -> list[tuple[str, str | None]]:
    taken = []
    while (task := store.claim_next_task(worker_id, lease_seconds=60, capabilities=capabilities, **kwargs)):
        taken.append((task.task_type, task.params().get("model")))
    return taken


def test_a_worker_claims_only_the_rows_its_capabilities_allow(store):
    for task_type, params in [("t2v", {"model": "big"}), ("ping", {}), ("t2v", {"model": "small"}), ("t2v", {}),
                              ("i2v", {"model": "small"}), ("extract_frame", {})]:
        store.add_task(NewTask(task_type, params))
    assert store.has_claimable_task(SMALL_BOX)
    # t2v naming no model runs t2v's default model (not allowed); i2v is not an allowed task type
    assert _claim_all(store, "small-box", SMALL_BOX) == [("ping", None), ("t2v", "small")]
    assert not store.has_claimable_task(SMALL_BOX)
    assert store.has_claimable_task()
    # an unrestricted worker takes the rest, as before
    assert sorted(_claim_all(store, "big-box", Capabilities()), key=str) == sorted(
        [("t2v", "big"), ("t2v", None), ("i2v", "small"), ("extract_frame", None)], key=str)


def test_the_restricted_claim_still_waits_for_dependencies_and_retry_delays(store):
    dependency = store.add_task(NewTask("t2v", {"model": "big"}))  # this box cannot run it: it stays Queued
    store.add_task(NewTask("ping", {}, dependant_on=dependency))
    runnable = store.add_task(NewTask("t2v", {"model": "small"}))
    assert store.claim_next_task("w", lease_seconds=60, capabilities=SMALL_BOX).id == runnable
    assert store.retry_later(runnable, "w", error_message="hub timeout", delay_seconds=3600) is TaskStatus.QUEUED
    assert store.claim_next_task("w", lease_seconds=60, capabilities=SMALL_BOX) is None
    assert not store.has_claimable_task(SMALL_BOX)


def test_priority_age_and_model_affinity_order_hold_within_the_allowed_rows(store):
    caps = Capabilities(task_types=None, models=("a", "b"), modelless_task_types=("ping",))
    ids = {}
    for name, task_type, params, priority in [("old_b", "t2v", {"model": "b"}, 0), ("ping", "ping", {}, 0),
                                              ("high_a", "t2v", {"model": "a"}, 5), ("a2", "t2v", {"model": "a"}, 0),
                                              ("c", "t2v", {"model": "c"}, 9)]:
        ids[store.add_task(NewTask(task_type, params, priority=priority))] = name
        time.sleep(0.01)
    order = []
    while (task := store.claim_next_task("w", lease_seconds=60, capabilities=caps, resident_model="a",
                                         affinity_window_seconds=3600)):
        order.append(ids[task.id])
    # priority first (c is higher but not allowed); then within priority 0 the resident model a before older rows
    assert order == ["high_a", "a2", "old_b", "ping"]


def test_a_task_type_restriction_alone_takes_rows_of_any_model(store):
    caps = resolve_capabilities(["ping"], None, None, fits=[ModelFit("m1", None, 1)])
    store.add_task(NewTask("t2v", {"model": "m1"}))
    store.add_task(NewTask("ping", {"model": "not-a-definition"}))
    store.add_task(NewTask("ping", {}))
    assert set(_claim_all(store, "w", caps)) == {("ping", None), ("ping", "not-a-definition")}


def test_resolving_flags_expands_globs_and_drops_models_that_do_not_fit_the_gpu():
    fits = [ModelFit("t2v", 54.0, 1), ModelFit("t2v_1.3B", 20.3, 1), ModelFit("tiny_t2v", 0.0, 1),
            ModelFit("flux", 45.9, 1), ModelFit("vace_14B", None, 4)]
    on_24 = resolve_capabilities(None, None, 24.0, fits=fits)
    assert on_24.models == ("t2v_1.3B", "tiny_t2v", "vace_14B")
    assert on_24.task_types is None
    # t2v rows naming no model run t2v (54 GiB): not on this box; ping needs no model
    assert "ping" in on_24.modelless_task_types and "t2v" not in on_24.modelless_task_types
    assert resolve_capabilities(None, None, 80.0, fits=fits) == Capabilities()  # everything fits: unrestricted
    assert resolve_capabilities(None, None, None, fits=fits) == Capabilities()  # no GPU found: no memory filter
    globbed = resolve_capabilities(["t2v", "ping"], ["t2v*"], 80.0, fits=fits)
    assert globbed.models == ("t2v", "t2v_1.3B") and globbed.modelless_task_types == ("t2v", "ping")
    with pytest.raises(CapabilityError, match=r"'wan\*' matches no model definition"):
        resolve_capabilities(None, ["wan*"], 80.0, fits=fits)
    with pytest.raises(CapabilityError, match=r"none fits this GPU's 24 GiB \(flux ~45.9 GiB at profile 1\)"):
        resolve_capabilities(None, ["flux"], 24.0, fits=fits)
    with pytest.raises(CapabilityError, match="unknown task type"):
        resolve_capabilities(["t2vv"], None, None, fits=fits)


def _fake_nvidia_smi(folder: Path, memory_mib: int) -> dict[str, str]:
    """gpu_info reads nvidia-smi from PATH: a script answering as a card of ``memory_mib`` MiB."""
    folder.mkdir(parents=True, exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho 'Fake GPU 24GB, {memory_mib}'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def test_a_magic_edit_row_naming_no_model_goes_only_to_a_worker_allowed_its_kontext_model():
    fits = [ModelFit("t2v", None, 1), ModelFit("flux_kontext", None, 1)]
    wan_only = resolve_capabilities(None, ["t2v"], None, fits=fits)
    assert "magic_edit" not in wan_only.modelless_task_types  # it would run flux_kontext, which --models excludes
    assert not wan_only.accepts("magic_edit", None)
    kontext = resolve_capabilities(None, ["flux_kontext"], None, fits=fits)
    assert "magic_edit" in kontext.modelless_task_types and kontext.accepts("magic_edit", None)


def test_worker_flags_and_the_detected_gpu_become_the_registered_capabilities(sqlite_store, tmp_path):
    env = _fake_nvidia_smi(tmp_path / "bin", 24 * 1024)
    sqlite_store.add_task(NewTask("ping", {"model": "t2v"}))  # t2v (14B) does not fit 24 GiB
    sqlite_store.add_task(NewTask("ping", {"model": "t2v_1.3B"}))
    result = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--worker", "w24", "--models", "t2v*",
                        env={**env, "WORKER_TASK_TYPES": "ping,t2v"})
    assert result.returncode == 0, result.stderr[-2000:]
    [record] = sqlite_store.list_workers(alive_within_seconds=600)
    assert record.gpu_memory_gb == 24.0
    assert record.capabilities == Capabilities(task_types=("ping", "t2v"), models=("t2v_1.3B",),
                                               modelless_task_types=("ping",))
    statuses = {t.params()["model"]: t.status for t in sqlite_store.list_tasks()}
    assert statuses == {"t2v": TaskStatus.QUEUED, "t2v_1.3B": TaskStatus.COMPLETE}


def test_a_models_flag_that_matches_nothing_stops_the_worker_with_the_reason(sqlite_store, tmp_path):
    result = run_worker(sqlite_store.path, tmp_path / "out", "--once", "--models", "wan2.2*")
    assert result.returncode == 2
    assert "--models" in result.stderr and "'wan2.2*' matches no model definition" in result.stderr


def test_tasks_stats_and_list_stuck_report_rows_no_live_worker_can_run(sqlite_store):
    sqlite_store.register_worker(WorkerInfo("w1", gpu_memory_gb=24.0, capabilities=Capabilities(
        task_types=None, models=("t2v_1.3B", "tiny_t2v"), modelless_task_types=("ping",))))
    sqlite_store.register_worker(WorkerInfo("w2", gpu_memory_gb=24.0, capabilities=Capabilities(
        task_types=("ping",), models=None, modelless_task_types=("ping",))))
    stuck_id = sqlite_store.add_task(NewTask("t2v", {"model": "wan2.2_a14b"}))
    sqlite_store.add_task(NewTask("t2v", {"model": "t2v_1.3B"}))
    sqlite_store.add_task(NewTask("ping", {}))
    no_model_id = sqlite_store.add_task(NewTask("t2v", {}))
    db = ["--db-file", str(sqlite_store.path)]
    out = CliRunner().invoke(cli, ["stats", *db, "--json"])
    assert out.exit_code == 0, out.output
    stuck = {(s["task_type"], s["model"]): s for s in json.loads(out.output)["stuck"]}
    assert set(stuck) == {("t2v", "wan2.2_a14b"), ("t2v", None)}
    assert stuck[("t2v", "wan2.2_a14b")]["reason"] == (
        "no live worker accepts model 'wan2.2_a14b' (no definition named 'wan2.2_a14b' exists): 1 live worker "
        "taking 't2v' take models t2v_1.3B, tiny_t2v; GPU memory 24 GiB")
    assert "default model 't2v'" in stuck[("t2v", None)]["reason"]
    listed = CliRunner().invoke(cli, ["list", *db, "--stuck"])
    assert listed.exit_code == 0, listed.output
    assert {line.split()[0] for line in listed.output.splitlines()} == {stuck_id, no_model_id}
    text = CliRunner().invoke(cli, ["stats", *db]).output
    assert "1 x t2v model=wan2.2_a14b: no live worker accepts model 'wan2.2_a14b'" in text
    assert "GPU memory 24 GiB" in text


# -- Postgres: the claim's plan, the dispatcher, two real workers ------------------------------------------------

def _claim_plan(url: str, caps: Capabilities) -> str:
    """The plans of the statements inside the claim (auto_explain of nested statements)."""
    lines: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.add_notice_handler(lambda notice: lines.append(notice.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")
        conn.execute("SET auto_explain.log_min_duration = 0")
        conn.execute("SET auto_explain.log_nested_statements = on")
        conn.execute("SET auto_explain.log_analyze = on")
        conn.execute("SET auto_explain.log_buffers = on")
        conn.execute("SET client_min_messages = log")
        conn.execute("SELECT id FROM claim_next_task('explain', 600, p_task_types => %s, p_models => %s, "
                     "p_modelless_task_types => %s)",
                     (list(caps.task_types or []) or None, list(caps.models or []),
                      list(caps.modelless_task_types or []))).fetchall()
    return "\n".join(lines)


@pytest.mark.postgres
def test_the_restricted_claim_probes_indexes_and_never_walks_the_rows_it_cannot_run(postgres_store,
                                                                                      postgres_schema_url):
    with psycopg.connect(postgres_schema_url, autocommit=True) as conn:
        conn.execute("INSERT INTO tasks (task_type, params) SELECT 't2v', jsonb_build_object('model', 'big') "
                     "FROM generate_series(1, 5000)")
        conn.execute("INSERT INTO tasks (task_type, params) SELECT 'i2v', '{}'::jsonb FROM generate_series(1, 5000)")
        conn.execute("INSERT INTO tasks (task_type, params) VALUES ('t2v', '{\"model\": \"small\"}'), ('ping', '{}')")
        conn.execute("ANALYZE tasks")
    plan = _claim_plan(postgres_schema_url, SMALL_BOX)
    assert "Index Scan using tasks_queued_model_idx" in plan, plan
    assert "Index Scan using tasks_queued_type_modelless_idx" in plan, plan
    assert "Seq Scan on tasks" not in plan and "Bitmap Heap Scan on tasks" not in plan, plan
    # 10,000 rows it cannot run: none is read (each probe stops at its first row, or finds none)
    assert "Rows Removed by Filter" not in plan, plan


def test_the_sqlite_restricted_claim_probes_the_per_group_indexes(sqlite_store):
    conn = sqlite_store._conn()
    plan = [row["detail"] for row in conn.execute("EXPLAIN QUERY PLAN " + sqlite_store._q("pick_capable_task"), {
        "task_types": '["t2v"]', "models": '["small"]', "modelless_task_types": '["ping"]',
        "resident_model": None, "resident_task_types": "[]", "affinity_modifier": "+0 seconds"})]
    # the ready_tasks view is flattened into the query: the plan names the table
    assert "SEARCH tasks USING INDEX tasks_queued_model_idx (status=? AND <expr>=?)" in plan
    assert "SEARCH tasks USING INDEX tasks_queued_type_modelless_idx (status=? AND task_type=?)" in plan
    assert "SEARCH tasks USING INDEX tasks_queued_type_named_idx (status=? AND task_type=?)" in plan
    assert not any(detail.startswith("SCAN tasks") for detail in plan), plan


@pytest.mark.postgres
def test_the_dispatcher_wakes_only_an_idle_worker_that_can_run_the_row(postgres_store, postgres_schema_url):
    with psycopg.connect(postgres_schema_url, autocommit=True) as conn:
        conn.execute("SELECT worker_idle('flux-box', NULL, 60, NULL, ARRAY['flux'], ARRAY['ping'])")
        conn.execute("SELECT worker_idle('wan-box', 't2v', 60, NULL, ARRAY['t2v', 't2v_1.3B'], ARRAY['ping', 't2v'])")
        conn.execute("SELECT worker_idle('wan-small', NULL, 60, NULL, ARRAY['t2v_1.3B'], ARRAY['ping'])")

        def woken() -> set[str]:
            return {row[0] for row in conn.execute("SELECT id FROM workers WHERE woken_at IS NOT NULL")}

        postgres_store.add_task(NewTask("t2v", {"model": "hunyuan"}))
        assert woken() == set()  # nobody idle can run it: nobody woken
        postgres_store.add_task(NewTask("flux", {"model": "flux"}))
        assert woken() == {"flux-box"}
        postgres_store.add_task(NewTask("t2v", {}))  # t2v's default model: only wan-box takes such rows
        assert woken() == {"flux-box", "wan-box"}
        postgres_store.add_task(NewTask("t2v", {"model": "t2v_1.3B"}))  # wan-box is busy now
        assert woken() == {"flux-box", "wan-box", "wan-small"}
        stored = conn.execute("SELECT capabilities FROM workers WHERE id = 'flux-box'").fetchone()[0]
    assert stored == {"task_types": None, "models": ["flux"], "modelless_task_types": ["ping"]}


@pytest.mark.postgres
def test_two_workers_with_different_capabilities_on_one_queue_each_take_only_their_rows(
        postgres_store, postgres_schema_url, tmp_path):
    ids = {}
    for i in range(6):
        model = "tiny_t2v" if i % 2 else "tiny_flux"
        ids[postgres_store.add_task(NewTask("ping", {"model": model, "sleep_seconds": 0.1}))] = model
    env = {"WORKER_TASK_TYPES": "ping"}
    workers = [start_worker(postgres_schema_url, tmp_path / "out", "--worker", name, "--models", model,
                            "--poll-interval", "0.5", env=env)
               for name, model in (("wan-worker", "tiny_t2v"), ("flux-worker", "tiny_flux"))]
    try:
        wait_for(lambda: all(t.status is TaskStatus.COMPLETE for t in postgres_store.list_tasks()), timeout=90)
    finally:
        for proc in workers:
            proc.terminate()
            proc.wait(timeout=30)
    done = {t.id: t.worker_id for t in postgres_store.list_tasks()}
    assert all(done[task_id] == ("wan-worker" if model == "tiny_t2v" else "flux-worker")
               for task_id, model in ids.items()), done


def test_the_sqlite_unrestricted_claim_walks_the_queue_index_and_probes_the_affine_rows(sqlite_store):
    """The claim of a worker without capabilities does not sort the queue for its model affinity (it did:
    7 ms at 10,000 queued rows, 95 ms at 100,000): the head comes from the queue-order index, the resident
    model's and resident task types' rows from one probe each; only those few candidates are sorted."""
    conn = sqlite_store._conn()
    rows = conn.execute("EXPLAIN QUERY PLAN " + sqlite_store._q("claim_next_task"), {
        "worker_id": "w", "lease_modifier": "+60 seconds", "picked_row": None, "resident_model": "tiny_t2v",
        "resident_task_types": '["t2v"]', "affinity_modifier": "-120 seconds"}).fetchall()
    plan = [(row["id"], row["parent"], row["detail"]) for row in rows]
    details = [detail for _, _, detail in plan]
    assert "SEARCH tasks USING INDEX tasks_ready_order_idx (status=?)" in details, details
    assert "SEARCH tasks USING INDEX tasks_queued_model_idx (status=? AND <expr>=? AND priority=?)" in details, details
    assert "SEARCH tasks USING INDEX tasks_queued_type_modelless_idx (status=? AND task_type=? AND priority=?)" in details, details
    sorts = [parent for _, parent, detail in plan if detail.startswith("USE TEMP B-TREE")]
    affine_scans = {parent for _, parent, detail in plan if detail == "SCAN affine"}
    assert sorts and set(sorts) <= affine_scans, details  # a sort, but only of the affine candidates
