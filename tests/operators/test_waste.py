"""WasteDetectionOperator on each source, executed in-process against real services."""

from __future__ import annotations

import json
import time

import pytest

from effopt.operators.waste import WasteDetectionOperator
from effopt.store import TaskUsageRecord

GIB = 2**30


def test_prometheus_source(prometheus_factory, monkeypatch):
    """Two days of a container that requests 8 GiB and uses 1 GiB, read from a real Prometheus."""
    now = int(time.time())
    pod = 'namespace="ml",pod="features-7d9c8b6f5d-x2x9k",container="main"'
    lines = ["# TYPE container_memory_working_set_bytes gauge"]
    lines += [f"container_memory_working_set_bytes{{{pod}}} {GIB} {ts}" for ts in range(now - 2 * 86400, now - 60, 60)]
    lines.append("# TYPE kube_pod_container_resource_requests gauge")
    lines += [f'kube_pod_container_resource_requests{{{pod},resource="memory"}} {8 * GIB} {ts}'
              for ts in range(now - 2 * 86400, now - 60, 60)]
    prom = prometheus_factory("\n".join(lines))
    host, port = prom.url.removeprefix("http://").split(":")
    monkeypatch.setenv("AIRFLOW_CONN_WASTE_PROM", json.dumps({"conn_type": "http", "host": host, "port": int(port)}))
    out = WasteDetectionOperator(task_id="detect", source="prometheus", prometheus_conn_id="waste_prom",
                                 selector='namespace="ml"', window_hours=48).execute({})
    summary = out["summary"]
    (finding,) = [f for f in summary["findings"] if f["kind"] == "over_provisioned"]
    assert finding["workload"] == "ml/features" and finding["resource"] == "memory"
    assert finding["severity"] == "critical"  # 7 GiB of unused request
    assert summary["totals"]["waste"] > 0 and out["artifacts"]["nbytes"] > 0


def test_airflow_task_source():
    from effopt.airflow_settings import get_store

    store = get_store()
    now = time.time()
    for i in range(30):  # a task measured every 10 minutes for 5 hours
        store.record_task_usage(TaskUsageRecord(
            dag_id="train", task_id="fit", run_id=f"r{i}", map_index=-1, try_number=1, hostname="h", pid=1,
            start=now - 18000 + 600 * i, end=now - 18000 + 600 * i + 60, wall_s=60.0, cpu_user_s=30.0,
            cpu_sys_s=0.0, cpu_s=30.0, peak_rss_bytes=GIB, rss_start_bytes=GIB // 2, peak_scope="span",
            state="success"))
    summary = WasteDetectionOperator(task_id="detect", source="airflow", dag_ids=["train"]).execute({})["summary"]
    assert summary["totals"]["workloads"] == 1 and summary["totals"]["cost"] > 0  # priced from measured usage
    assert {f["workload"] for f in summary["findings"]} <= {"train/fit"}


def test_bad_source_and_missing_path_are_named_and_fail_without_a_retry():
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="unknown source 'ftp'.*not retried"):
        WasteDetectionOperator(task_id="d", source="ftp").execute({})
    with pytest.raises(AirflowFailException, match="source 'trace' needs a trace file or directory: set the DAG "
                                                   "param 'path'"):
        WasteDetectionOperator(task_id="d", source="trace").execute({})


def test_auto_source_follows_what_the_run_was_given(monkeypatch, tmp_path):
    """auto: a trace path means the trace; else Prometheus when its connection exists; else the task records."""
    from effopt.hooks.metrics import resolve_source

    monkeypatch.delenv("AIRFLOW_CONN_AUTO_PROM", raising=False)
    assert resolve_source("auto", "auto_prom", str(tmp_path))[0] == "trace"
    assert resolve_source("auto", "auto_prom")[0] == "airflow"
    monkeypatch.setenv("AIRFLOW_CONN_AUTO_PROM", "http://127.0.0.1:9")
    assert resolve_source("auto", "auto_prom")[0] == "prometheus"
    assert resolve_source("auto", "auto_prom", str(tmp_path))[0] == "trace"
    assert resolve_source("airflow", "auto_prom", str(tmp_path)) == ("airflow", "source 'airflow' as asked")
