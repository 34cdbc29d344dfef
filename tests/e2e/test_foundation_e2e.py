"""End to end against a real Airflow 3.3 standalone: DAG runs triggered over REST, usage read back."""

from __future__ import annotations

import urllib.error
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
    # Registered once: the installed distribution's entry point, the plugins-folder shim standing down.
    assert client.get("/api/v2/plugins/importErrors")["import_errors"] == []


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


def test_effopt_pages_require_login_and_show_usage_and_cache(airflow):
    client = airflow.client
    run_id, state = client.run_dag("effopt_selftest", conf={"megabytes": 50, "cpu_seconds": 0.2})
    assert state == "success", client.failure_report("effopt_selftest", run_id)

    for path in ("/effopt/", "/effopt/api/task-usage", "/effopt/api/cache", "/effopt/api/rightsizing"):
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(airflow.url + path, timeout=30)
        assert denied.value.code == 401, path

    rows = {(r["dag_id"], r["task_id"]): r for r in client.get("/effopt/api/task-usage")}
    heavy = rows[("effopt_selftest", "allocate_and_burn")]
    assert heavy["runs"] >= 1 and heavy["median_cpu_s"] > 0.1 and heavy["max_peak_rss_bytes"] > 50 * MB

    cache = client.get("/effopt/api/cache")
    assert "redis://" in cache["backend"] and set(cache["totals"]) >= {"calls", "hits", "hit_rate", "saved_s"}

    page = client.request("GET", "/effopt/")
    assert "Measured task usage" in page and "allocate_and_burn" in page and "Computation cache" in page

    plugin = {p["name"]: p for p in client.plugins()}["effopt"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/effopt"
    assert plugin["external_views"][0]["href"] == "/effopt/"
