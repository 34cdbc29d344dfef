"""End to end against a real Airflow 3.3 standalone: DAG runs triggered over REST, usage read back."""

from __future__ import annotations

import urllib.request

import pytest

from effopt.store import EffoptStore

pytestmark = pytest.mark.slow

MB = 1024 * 1024


def test_ui_plugin_and_bundle_are_served(airflow):
    with urllib.request.urlopen(airflow.url + "/", timeout=30) as resp:
        assert resp.status == 200
        assert "<html" in resp.read(4096).decode(errors="replace").lower()
    client = airflow.client
    plugins = {p["name"]: p for p in client.plugins()}
    assert plugins["effopt"]["listeners"] == ["effopt.listener"]
    client.wait_for_dag("effopt_selftest")
    assert client.import_errors() == []


def test_listener_records_measured_usage_of_a_rest_triggered_run(airflow):
    client = airflow.client
    run_id, state = client.run_dag("effopt_selftest", conf={"megabytes": 200, "cpu_seconds": 1.0})
    assert state == "success", client.failure_report("effopt_selftest", run_id)
    result = client.xcom("effopt_selftest", run_id, "allocate_and_burn")
    assert result["cpu_s"] >= 1.0

    records = {r.task_id: r for r in EffoptStore(airflow.store_url).task_usage(dag_id="effopt_selftest", run_id=run_id)}
    assert set(records) == set(client.task_states("effopt_selftest", run_id))  # every task has a record
    heavy = records["allocate_and_burn"]
    assert heavy.state == "success" and heavy.try_number == 1
    assert heavy.peak_rss_bytes >= 200 * MB
    assert heavy.cpu_s >= 0.8
    assert heavy.peak_scope == "span"
    # The peak is the task's own: ~200 MB above where the light tasks peak.
    light = max(records["prepare"].peak_rss_bytes, records["report"].peak_rss_bytes)
    assert heavy.peak_rss_bytes - light >= 150 * MB
    for r in records.values():
        assert r.wall_s > 0 and r.end >= r.start and r.pid > 0
