"""effopt scaled out for real: CeleryExecutor, Postgres, Redis and two Celery workers, all over REST.

The topology (``tests/celery_harness.py``) runs the settings of ``docker-compose.yaml``; each worker has one
task slot, so two tasks ready at once run on different workers.  The test that kills a worker runs last and
restarts it.
"""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from effopt.cache import is_cache_reference
from effopt.graph import load_spec, optimize, run_local
from effopt.metrics.airflow_tasks import AirflowTaskSource
from effopt.rightsizing.recommend import recommend_all
from effopt.store import EffoptStore
from tests.airflow_harness import AirflowApiError
from tests.e2e.test_graph_e2e import _close

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKERS = {"worker-a", "worker-b"}
MIB = 1 << 20


def _trigger_together(client, dag_id: str, confs: list[dict]) -> list[str]:
    """Runs created while the DAG is paused, then unpaused: the scheduler starts them in the same loop."""
    client.wait_for_dag(dag_id)
    client.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": True})
    runs = [client.trigger(dag_id, conf) for conf in confs]
    client.unpause(dag_id)
    return runs


def _ti(client, dag_id: str, run_id: str, task_id: str) -> dict:
    (ti,) = [t for t in client.task_instances(dag_id, run_id) if t["task_id"] == task_id]
    return ti


def _tries(client, dag_id: str, run_id: str, task_id: str) -> dict[int, dict]:
    body = client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries")
    return {t["try_number"]: t for t in body["task_instances"]}


def _wait_idle(client, timeout: float = 300) -> None:
    """No task queued or running anywhere, so the next tasks find both workers free."""
    deadline = time.monotonic() + timeout
    while True:
        busy = client.get("/api/v2/dags/~/dagRuns/~/taskInstances?state=queued&state=running&limit=20")
        if not busy["task_instances"]:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"tasks still busy: {[(t['dag_id'], t['task_id']) for t in busy['task_instances']]}")
        time.sleep(1)


def _hosts_after(log: str, prefix: str) -> list[str]:
    """The host names the task log lines name after ``prefix`` (e.g. ``..., on worker-b``), in order."""
    return [ln.split(prefix, 1)[1].split()[0].rstrip(".,;") for ln in log.splitlines() if prefix in ln]


def _host_after(log: str, prefix: str) -> str:
    """The host name the one task log line with ``prefix`` names."""
    (host,) = _hosts_after(log, prefix)
    return host


def _store(topology) -> EffoptStore:
    return EffoptStore(topology.store_url)


# -- single-flight across workers ---------------------------------------------------------------------------
def test_two_parallel_runs_compute_once_across_workers(celery_topology, tmp_path):
    client, dag = celery_topology.client, "effopt_cache_example"
    record = tmp_path / "computed.txt"
    conf = {"rows": 150000, "seed_column": 17, "record_to": str(record)}
    _wait_idle(client)
    runs = _trigger_together(client, dag, [conf, conf])
    for run in runs:
        assert client.wait_for_run(dag, run, 400) == "success", client.failure_report(dag, run)

    assert record.read_text().count("computed") == 1  # the body ran once in total
    meta = {run: client.xcom(dag, run, "build_features", key="effopt_cache") for run in runs}
    (computed,) = [r for r in runs if not meta[r]["hit"]]
    (hit,) = [r for r in runs if meta[r]["hit"]]
    assert meta[hit]["key"] == meta[computed]["key"]

    computed_host = _ti(client, dag, computed, "build_features")["hostname"]
    computed_log = client.task_log(dag, computed, "build_features")
    hit_log = client.task_log(dag, hit, "build_features")
    assert "effopt cache miss" in computed_log and f"on {computed_host}" in computed_log
    # The other run started on the other worker while the value was being computed, found the lock, gave its
    # worker slot back (deferred to the triggerer), and resumed (on whichever worker was free) to read the value.
    deferred_on = _host_after(hit_log, "deferring until it is stored, without holding a worker slot, on ")
    assert {computed_host, deferred_on} == WORKERS, (computed_host, deferred_on)
    assert "resumed after waiting in the triggerer (ready)" in hit_log
    hit_host = _ti(client, dag, hit, "build_features")["hostname"]
    assert f"effopt cache hit: key {meta[hit]['key']}" in hit_log and f"on {hit_host}" in hit_log
    # Downstream (on whichever worker) saw the same matrix through CacheReferenceXCom.
    summaries = [client.xcom(dag, run, "summarize") for run in runs]
    assert summaries[0] == summaries[1] and summaries[0]["shape"] == [150000, 64]


# -- a cache reference made on one worker, resolved on the other ---------------------------------------------
def test_array_cached_on_worker_a_is_consumed_on_worker_b(celery_topology):
    client, dag = celery_topology.client, "effopt_scaleout_handoff"
    rows = 4096
    run, state = client.run_dag(dag, {"rows": rows, "seed": 7, "token": uuid.uuid4().hex}, timeout=300)
    assert state == "success", client.failure_report(dag, run)

    produce, consume = _ti(client, dag, run, "produce"), _ti(client, dag, run, "consume")
    assert (produce["queue"], produce["hostname"]) == ("cpu", "worker-a")
    assert (consume["queue"], consume["hostname"]) == ("gpu", "worker-b")
    ref = client.xcom(dag, run, "produce")  # the API server shows the small reference...
    assert is_cache_reference(ref) and ref["nbytes"] > MIB  # over 1 MiB in the cache (Redis)
    out = client.xcom(dag, run, "consume")  # ...and worker B's task got the array itself
    expected = np.random.default_rng(7).standard_normal((rows, 64))  # ok: the DAG's seeded test data
    assert out == {"type": "ndarray", "shape": [rows, 64], "nbytes": expected.nbytes,
                   "sum": float(expected.sum()), "host": "worker-b"}


# -- the listener on both workers, into the Postgres store, on the effopt page --------------------------------
@pytest.fixture(scope="module")
def usage_run(celery_topology):
    client, dag = celery_topology.client, "effopt_scaleout_usage"
    _wait_idle(client)
    run, state = client.run_dag(dag, {"megabytes": 64, "cpu_seconds": 0.3}, timeout=300)
    assert state == "success", client.failure_report(dag, run)
    return run


def test_every_try_from_both_workers_is_in_the_postgres_store_and_on_the_page(celery_topology, usage_run):
    client, dag = celery_topology.client, "effopt_scaleout_usage"
    store = _store(celery_topology)
    try:
        records = store.task_usage(dag_id=dag, run_id=usage_run)
    finally:
        store.dispose()
    by_try = {(r.task_id, r.try_number): r for r in records}
    tasks = [f"burn_{i}" for i in range(4)]
    assert set(by_try) == {(t, 1) for t in tasks} | {("flaky", 1), ("flaky", 2)}
    for (task_id, try_number), rec in by_try.items():
        # The host Airflow recorded for that very try.
        assert rec.hostname == _tries(client, dag, usage_run, task_id)[try_number]["hostname"], (task_id, try_number)
    assert {r.hostname for r in records} == WORKERS
    assert by_try[("flaky", 1)].state in ("up_for_retry", "failed") and by_try[("flaky", 2)].state == "success"
    for t in tasks:
        assert by_try[(t, 1)].peak_rss_bytes >= 64 * MIB and by_try[(t, 1)].cpu_s >= 0.25, by_try[(t, 1)]

    rows = {r["task_id"]: r for r in client.get("/effopt/api/task-usage", dag_id=dag)}
    assert set(rows) == set(tasks) | {"flaky"}
    assert (rows["flaky"]["tries"], rows["flaky"]["successes"]) == (2, 1)
    for task_id, row in rows.items():
        mine = [r for r in records if r.task_id == task_id]
        assert row["hosts"] == sorted({r.hostname for r in mine}), task_id
        assert [h["hostname"] for h in row["history"]] == [r.hostname for r in mine]
    assert {h for row in rows.values() for h in row["hosts"]} == WORKERS


def test_rightsizing_from_airflow_reads_the_postgres_store(celery_topology, usage_run):
    client, dag = celery_topology.client, "effopt_rightsizing"
    settings = {"min_samples": 1}
    conf = {"source": "airflow", "dag_ids": ["effopt_scaleout_usage"], "window_hours": 24, "recommender": "effopt",
            "recommender_settings": settings, "mode": "dry-run"}
    try:
        run, state = client.run_dag(dag, conf, timeout=300)
    finally:
        # Unpausing an @hourly DAG also schedules its latest interval: no more of those during later tests.
        client.request("PATCH", f"/api/v2/dags/{dag}", {"is_paused": True})
    assert state == "success", client.failure_report(dag, run)
    out = client.xcom(dag, run, "recommend")
    assert out["source"] == "airflow"

    # The same recommender over the same Postgres records, in this process.
    store = _store(celery_topology)
    try:
        source = AirflowTaskSource(store, dag_ids=["effopt_scaleout_usage"])
        series = [s for r in ("cpu", "memory") for s in source.series(r)]
        expected, _ = recommend_all(series, "effopt", settings)
        plan = store.latest_rightsizing_plan(dag)
        peaks = {f"effopt_scaleout_usage/{r.task_id}": r.peak_rss_bytes
                 for r in store.task_usage(dag_id="effopt_scaleout_usage")}
    finally:
        store.dispose()
    want = {(r.workload, r.resource): r.target for r in expected}
    got = {(r["workload"], r["resource"]): r["target"] for r in out["recommendations"]}
    assert {w for w, _ in got} >= {f"effopt_scaleout_usage/burn_{i}" for i in range(4)}
    assert set(got) == set(want)
    for key, target in want.items():
        assert got[key] == pytest.approx(target, rel=0.02), key
    for (workload, resource), target in got.items():
        if resource == "memory" and workload in peaks:
            assert target >= peaks[workload] * 0.999, (workload, target)
    # The plan the effopt page shows was saved in the same Postgres store.
    assert plan is not None and (plan["run_id"], plan["source"]) == (run, "airflow")


# -- a compiled graph DAG over both workers -------------------------------------------------------------------
def test_graph_dag_spreads_over_both_workers_with_the_local_executor_outputs(celery_topology):
    client, dag = celery_topology.client, "effopt_graph_ml_models"
    graph = load_spec(REPO / "include" / "graphs" / "ml_models.yaml")
    optimized, _ = optimize(graph)
    conf = {"symbol": "AAPL", "limit": 3000}
    expected = run_local(optimized, conf)

    _wait_idle(client)
    run, state = client.run_dag(dag, conf, timeout=400)
    assert state == "success", client.failure_report(dag, run)
    assert {ti["hostname"] for ti in client.task_instances(dag, run)} == WORKERS
    producers = {name: node.id for node in optimized.nodes.values() for name in node.outputs}
    for output in graph.outputs:
        got = client.xcom(dag, run, producers[output], key=output)
        assert _close(got, expected[output]), f"{output}: {got!r} != {expected[output]!r}"



# -- GPU leases shared by the workers --------------------------------------------------------------------------
def _ensure_pool(client, name: str, slots: int) -> None:
    try:
        client.request("POST", "/api/v2/pools", {"name": name, "slots": slots, "include_deferred": False})
    except AirflowApiError as exc:
        if exc.status != 409:
            raise
        client.request("PATCH", f"/api/v2/pools/{name}?update_mask=slots",
                       {"name": name, "slots": slots, "include_deferred": False})


def test_gpu_tasks_on_both_workers_never_over_commit_the_inventory(celery_topology):
    """effopt_gpu_example's three tasks each ask 600 thousandths of a GPU; the inventory has one T4, so only
    one may hold it at a time.  The pool is set to 3 slots (a pool sized by hand, too large), so Airflow starts
    two of them at once, one on each worker (one slot each): the leases in the shared Redis, not the pool, keep
    them apart.  Which worker a deferred task resumes on is Celery's choice, so the workers are read from the
    hosts that ran the tasks and the hosts that gave a slot back."""
    client, dag = celery_topology.client, "effopt_gpu_example"
    _wait_idle(client)
    _ensure_pool(client, "effopt_gpu", 3)
    (run,) = _trigger_together(client, dag, [{"seconds": 6}])
    assert client.wait_for_run(dag, run, timeout=300) == "success", client.failure_report(dag, run)
    client.request("PATCH", f"/api/v2/dags/{dag}", {"is_paused": True})
    held = sorted((client.xcom(dag, run, f"gpu_task_{n}") for n in (1, 2, 3)), key=lambda h: h["start"])
    assert [h["cuda_visible_devices"] for h in held] == ["0", "0", "0"]
    for earlier, later in itertools.pairwise(held):
        assert earlier["end"] <= later["start"], (earlier, later)  # the one GPU held by one task at a time
    # Both workers asked the same leases for the GPU: each task's last try ran on the host Airflow records, and
    # a task that found the GPU taken gave its slot back where it was (it may resume on either worker).
    ran = {_ti(client, dag, run, f"gpu_task_{n}")["hostname"] for n in (1, 2, 3)}
    logs = [client.task_log(dag, run, f"gpu_task_{n}") for n in (1, 2, 3)]
    deferred = {host for log in logs for host in _hosts_after(log, "gave the slot back on ")}
    assert deferred, "no task waited for the one GPU"
    assert ran | deferred == WORKERS, (ran, deferred)


# -- a worker killed mid-task (last: it restarts the worker) --------------------------------------------------
def _wait(what: str, check, timeout: float = 240.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what} within {timeout:.0f}s")


def test_a_worker_killed_mid_task_loses_nothing_and_computes_nothing_twice(celery_topology, tmp_path):
    topology = celery_topology
    client, dag, task = topology.client, "effopt_scaleout_failover", "slow_features"
    record, go = tmp_path / "record.txt", tmp_path / "go"
    conf = {"token": uuid.uuid4().hex, "record_to": str(record), "go_file": str(go), "max_wait_s": 300}
    client.wait_for_dag(dag)
    client.unpause(dag)
    _wait_idle(client)

    first = client.trigger(dag, conf)
    starts = _wait("the first run's task computing", lambda: record.exists() and record.read_text().splitlines()[:1])
    victim = starts[0].split()[1]
    (survivor,) = WORKERS - {victim}
    second = client.trigger(dag, conf)  # same inputs: its task starts on the other worker, finds the lock, defers
    _wait("the second run's task deferred on the first one's lock", lambda: _ti(client, dag, second, task)["state"]
          == "deferred" and "deferring until it is stored" in client.task_log(dag, second, task))
    deferred_on = _host_after(client.task_log(dag, second, task), "without holding a worker slot, on ")
    assert deferred_on == survivor
    try:
        topology.kill_worker(victim)  # SIGKILL: Celery, its pool, the task supervisor and the task itself
        go.touch()
        for run in (first, second):
            assert client.wait_for_run(dag, run, 400) == "success", client.failure_report(dag, run)
    finally:
        topology.start_worker(victim)
        topology.wait_ready(240)

    lines = record.read_text().split()
    events = [tuple(lines[i:i + 2]) for i in range(0, len(lines), 3)]
    # Started on the victim (killed there), then once more on the survivor, which took the dead worker's
    # lock over after its lease; finished once.
    assert events == [("start", victim), ("start", survivor), ("done", survivor)], events
    second_meta = client.xcom(dag, second, task, key="effopt_cache")
    assert second_meta["hit"] is False, second_meta
    # The dead worker's lock expired without a value: the triggerer said so, and the second run computed it.
    assert "resumed after waiting in the triggerer (free)" in client.task_log(dag, second, task)
    # The killed try was retried by Airflow on the survivor, and read the value the survivor stored.
    tries = _tries(client, dag, first, task)
    assert (tries[1]["hostname"], tries[2]["hostname"]) == (victim, survivor), tries
    first_meta = client.xcom(dag, first, task, key="effopt_cache")
    assert first_meta["hit"] is True and first_meta["key"] == second_meta["key"], first_meta
    assert client.xcom(dag, first, task) == client.xcom(dag, second, task) == {
        "token": conf["token"], "squares": [i * i for i in range(10)]}
    # A third run with the same inputs: nothing is computed again.
    third, state = client.run_dag(dag, conf, timeout=300)
    assert state == "success" and client.xcom(dag, third, task, key="effopt_cache")["hit"] is True
    assert record.read_text().split().count("done") == 1
