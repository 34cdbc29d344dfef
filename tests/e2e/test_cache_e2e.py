"""Cached computation in a real Airflow: the second identical run takes the result from the cache."""

from __future__ import annotations

import time

import pytest
import redis

from tests.airflow_harness import AirflowApiError

pytestmark = pytest.mark.slow

DAG = "effopt_cache_example"


def test_second_identical_run_does_not_execute_the_body(airflow, tmp_path):
    client = airflow.client
    record = tmp_path / "computed.txt"
    conf = {"rows": 6000, "seed_column": 5, "record_to": str(record)}

    first, state = client.run_dag(DAG, conf)
    assert state == "success", client.failure_report(DAG, first)
    assert record.read_text().count("computed") == 1
    first_meta = client.xcom(DAG, first, "build_features", key="effopt_cache")
    assert first_meta["hit"] is False

    second, state = client.run_dag(DAG, conf)
    assert state == "success", client.failure_report(DAG, second)
    # The body did not run again: the side-effect counter still shows one computation.
    assert record.read_text().count("computed") == 1
    second_meta = client.xcom(DAG, second, "build_features", key="effopt_cache")
    assert second_meta["hit"] is True and second_meta["key"] == first_meta["key"]
    assert second_meta["saved_s"] > 0

    # 6000 x 64 float64 = 3 MB: XCom carries a small reference, the same in both runs...
    ref1 = client.xcom(DAG, first, "build_features")
    ref2 = client.xcom(DAG, second, "build_features")
    assert ref1 == ref2 and ref1["nbytes"] >= 6000 * 64 * 8
    # ...and downstream saw the same matrix both times.
    out1, out2 = client.xcom(DAG, first, "summarize"), client.xcom(DAG, second, "summarize")
    assert out1 == out2 and out1["shape"] == [6000, 64]

    log = client.task_log(DAG, second, "build_features")
    assert "effopt cache hit" in log and first_meta["key"] in log


def test_refresh_conf_recomputes(airflow, tmp_path):
    client = airflow.client
    record = tmp_path / "computed.txt"
    conf = {"rows": 3000, "seed_column": 7, "record_to": str(record)}
    run, state = client.run_dag(DAG, conf)
    assert state == "success", client.failure_report(DAG, run)
    run, state = client.run_dag(DAG, {**conf, "effopt_cache_refresh": True})
    assert state == "success", client.failure_report(DAG, run)
    assert record.read_text().count("computed") == 2
    assert client.xcom(DAG, run, "build_features", key="effopt_cache")["refresh"] is True


def settle_scheduled_reports(client, timeout: float = 240) -> None:
    """Unpause the @daily report and wait for the run the scheduler starts then: it would take the snapshot."""
    report = "effopt_cache_report"
    client.wait_for_dag(report)
    client.unpause(report)
    deadline = time.monotonic() + timeout
    time.sleep(5)  # the scheduler creates the latest interval's run on its next loop
    while True:
        runs = client.get(f"/api/v2/dags/{report}/dagRuns", limit=100)["dag_runs"]
        if all(r["state"] in ("success", "failed") for r in runs):
            return
        assert time.monotonic() < deadline, f"scheduled {report} runs did not finish: {runs}"
        time.sleep(1)


def test_cache_report_summarizes_hits_and_time_saved(airflow, redis_server, tmp_path):
    client = airflow.client
    settle_scheduled_reports(client)
    conf = {"rows": 2000, "seed_column": 11, "record_to": ""}
    for _ in range(2):
        run, state = client.run_dag(DAG, conf)
        assert state == "success", client.failure_report(DAG, run)
    report_run, state = client.run_dag("effopt_cache_report")
    assert state == "success", client.failure_report("effopt_cache_report", report_run)
    summary = client.xcom("effopt_cache_report", report_run, "summarize_cache")
    (fn,) = [f for f in summary["functions"] if f["function"].endswith("build_features")]
    assert fn["hits"] >= 1 and fn["misses"] >= 1 and fn["saved_s"] > 0
    totals = summary["totals"]
    assert totals["hit_rate"] == pytest.approx(totals["hits"] / totals["calls"], abs=1e-4)
    assert "redis://" in summary["backend"]  # the session's Airflow uses the effopt_redis connection

    # The next report covers only what happened since this one, and survives corrupted statistics.
    run, state = client.run_dag(DAG, conf)
    assert state == "success"
    r = redis.Redis.from_url(redis_server.url)
    r.hset(f"effopt:cache:s:{fn['namespace']}:{fn['function']}", "errors", "abc")
    r.sadd("effopt:cache:s", b"e2e-garbage")
    second_report, state = client.run_dag("effopt_cache_report")
    assert state == "success", client.failure_report("effopt_cache_report", second_report)
    later = client.xcom("effopt_cache_report", second_report, "summarize_cache")
    assert any("'errors'" in p and "b'abc'" in p for p in later["problems"]), later["problems"]
    assert any("e2e-garbage" in p for p in later["problems"])
    (fn2,) = [f for f in later["functions"] if f["function"].endswith("build_features")]
    assert later["period_start"] == pytest.approx(summary["period_end"])
    assert (fn2["hits"], fn2["misses"]) == (1, 0)


def test_a_run_waiting_for_another_runs_computation_defers_and_the_body_runs_once(airflow, tmp_path):
    """Two runs of the same cached task at once: one computes, the other waits ``deferred`` (no worker slot)."""
    client = airflow.client
    record = tmp_path / "computed.txt"
    gate = tmp_path / "hold"
    gate.touch()  # the computing run holds until the other one is seen deferred
    conf = {"rows": 2500, "seed_column": 17, "record_to": str(record), "hold_while": str(gate)}
    client.wait_for_dag(DAG)
    client.unpause(DAG)
    runs = [client.trigger(DAG, conf), client.trigger(DAG, conf)]
    try:
        deadline = time.monotonic() + 240
        states: dict[str, str | None] = {}
        while time.monotonic() < deadline:
            states = {run: client.task_states(DAG, run).get("build_features") for run in runs}
            if record.exists() and sorted(map(str, states.values())) == ["deferred", "running"]:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"never saw one run computing and the other deferred: {states}; "
                                 f"{[client.failure_report(DAG, run) for run in runs]}")
    finally:
        gate.unlink()
    waiter = next(run for run, state in states.items() if state == "deferred")
    computer = next(run for run in runs if run != waiter)
    for run in runs:
        assert client.wait_for_run(DAG, run) == "success", client.failure_report(DAG, run)
    assert record.read_text().count("computed") == 1  # the body ran once, in the computing run
    computed = client.xcom(DAG, computer, "build_features", key="effopt_cache")
    waited = client.xcom(DAG, waiter, "build_features", key="effopt_cache")
    assert computed["hit"] is False and waited["hit"] is True and waited["key"] == computed["key"]
    assert client.xcom(DAG, waiter, "build_features") == client.xcom(DAG, computer, "build_features")
    assert client.xcom(DAG, waiter, "summarize") == client.xcom(DAG, computer, "summarize")
    (ti,) = [t for t in client.task_instances(DAG, waiter) if t["task_id"] == "build_features"]
    logs = []
    for try_number in range(1, ti["try_number"] + 1):  # Airflow counts the resumption as a try of its own
        try:
            logs.append(client.task_log(DAG, waiter, "build_features", try_number))
        except AirflowApiError as exc:
            if exc.status != 404:
                raise
    log = "\n".join(logs)
    assert "deferring until it is stored" in log and "effopt cache hit" in log, log[-3000:]
