"""Cached computation in a real Airflow: the second identical run takes the result from the cache."""

from __future__ import annotations

import pytest

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


def test_cache_report_summarizes_hits_and_time_saved(airflow, tmp_path):
    client = airflow.client
    conf = {"rows": 2000, "seed_column": 11, "record_to": ""}
    for _ in range(2):
        run, state = client.run_dag(DAG, conf)
        assert state == "success", client.failure_report(DAG, run)
    report_run, state = client.run_dag("effopt_cache_report")
    assert state == "success", client.failure_report("effopt_cache_report", report_run)
    summary = client.xcom("effopt_cache_report", report_run, "summarize_cache")
    (fn,) = [f for f in summary["functions"] if f["function"].endswith("build_features")]
    assert fn["hits"] >= 1 and fn["misses"] >= 1 and fn["saved_s"] > 0
    assert summary["totals"]["hit_rate"] == pytest.approx(summary["totals"]["hits"] / summary["totals"]["calls"], abs=1e-4)
    assert "redis://" in summary["backend"]  # the session's Airflow uses the effopt_redis connection

    # The next report covers only what happened since this one.
    run, state = client.run_dag(DAG, conf)
    assert state == "success"
    second_report, state = client.run_dag("effopt_cache_report")
    assert state == "success", client.failure_report("effopt_cache_report", second_report)
    later = client.xcom("effopt_cache_report", second_report, "summarize_cache")
    (fn2,) = [f for f in later["functions"] if f["function"].endswith("build_features")]
    assert later["period_start"] == pytest.approx(summary["period_end"])
    assert (fn2["hits"], fn2["misses"]) == (1, 0)
