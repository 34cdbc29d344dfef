"""effopt_rightsizing in a real Airflow, triggered over REST, reading a real Prometheus (dry-run and patch)."""

from __future__ import annotations

import json
import time

import pytest

from effopt.metrics.prometheus import PrometheusSource
from effopt.rightsizing.recommend import recommend_all
from effopt.store import EffoptStore
from tests.k8s_standin import K8sStandIn
from tests.rightsizing.apply.conftest import container_resources, deployment, kubectl_patch_local

pytestmark = pytest.mark.slow

MIB = 2**20


def _history(now: int) -> str:
    """Three days of a Deployment's container at a steady 0.5 core and 400 MiB, requesting 2 cores / 2 GiB."""
    pod, start = 'namespace="ml",pod="trainer-7d9c8b6f5d-x2x9k",container="main"', now - 3 * 86400
    lines = ["# TYPE container_cpu_usage_seconds_total counter"]
    lines += [f"container_cpu_usage_seconds_total{{{pod}}} {0.5 * (ts - start):.1f} {ts}"
              for ts in range(start, now - 60, 60)]
    lines.append("# TYPE container_memory_working_set_bytes gauge")
    lines += [f"container_memory_working_set_bytes{{{pod}}} {400 * MIB} {ts}" for ts in range(start, now - 60, 60)]
    lines.append("# TYPE kube_pod_container_resource_requests gauge")
    for resource, value in (("cpu", 2), ("memory", 2048 * MIB)):
        lines += [f'kube_pod_container_resource_requests{{{pod},resource="{resource}"}} {value} {ts}'
                  for ts in range(start, now - 60, 60)]
    return "\n".join(lines)


def test_dry_run_plan_from_prometheus(airflow, prometheus_factory):
    now = int(time.time())
    prom = prometheus_factory(_history(now))
    client = airflow.client
    port = prom.url.rsplit(":", 1)[1]
    conn = {"connection_id": "e2e_prometheus", "conn_type": "http", "host": "127.0.0.1", "port": int(port)}
    client.request("POST", "/api/v2/connections", conn)

    conf = {"source": "prometheus", "prometheus_conn_id": "e2e_prometheus", "selector": 'namespace="ml"',
            "window_hours": 72, "recommender": "effopt", "mode": "dry-run"}
    run_id, state = client.run_dag("effopt_rightsizing", conf)
    assert state == "success", client.failure_report("effopt_rightsizing", run_id)
    out = client.xcom("effopt_rightsizing", run_id, "recommend")

    # The same recommender on the same Prometheus, in this process: the DAG must agree with it.
    source = PrometheusSource(prom.url, start=now - 72 * 3600, end=time.time(), selector='namespace="ml"')
    series = [s for r in ("cpu", "memory") for s in source.series(r)]
    expected, _ = recommend_all(series, "effopt")
    want = {(r.workload, r.container, r.resource): r.target for r in expected}
    got = {(r["workload"], r["container"], r["resource"]): r["target"] for r in out["recommendations"]}
    assert set(got) == {("ml/trainer", "main", "cpu"), ("ml/trainer", "main", "memory")} == set(want)
    for key, target in want.items():
        assert got[key] == pytest.approx(target, rel=0.02), key
    assert 0.5 <= got[("ml/trainer", "main", "cpu")] < 1.0  # steady 0.5 core, not the 2-core request
    assert 400 * MIB <= got[("ml/trainer", "main", "memory")] < 800 * MIB

    (item,) = out["plan"]["items"]
    assert item["workload"] == {"kind": "Deployment", "namespace": "ml", "name": "trainer"}
    assert item["container"] == "main" and item["action"] == "apply", item["guardrails"]
    assert item["monthly_cost_delta"] < 0 and item["missing_prices"] == [], item  # smaller requests cost less

    applied = client.xcom("effopt_rightsizing", run_id, "apply")
    assert applied["mode"] == "dry-run" and applied["plan"] == out["plan"]


def test_patch_mode_patches_the_deployment_once_and_audits_it(airflow, prometheus_factory, tmp_path):
    """``mode: patch`` through a DAG run: the apply task's KubernetesHook patches the live Deployment.

    There is no real Kubernetes API server on this machine: the Airflow task talks, through the
    official client behind ``KubernetesHook``, to ``tests.k8s_standin.K8sStandIn`` (a local HTTP
    stand-in that records requests), named by a ``kubernetes`` connection whose ``kube_config_path``
    extra points at a kube config for it.  Prometheus is real.
    """
    now = int(time.time())
    prom = prometheus_factory(_history(now))
    client = airflow.client
    client.request("POST", "/api/v2/connections", {"connection_id": "e2e_prometheus_patch", "conn_type": "http",
                                                   "host": "127.0.0.1", "port": int(prom.url.rsplit(":", 1)[1])})
    cluster = K8sStandIn().start()
    try:
        live = cluster.add(deployment("trainer", "ml", replicas=3, containers={
            "main": {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}}))
        kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig.yaml")
        client.request("POST", "/api/v2/connections", {
            "connection_id": "e2e_kubernetes", "conn_type": "kubernetes",
            "extra": json.dumps({"kube_config_path": str(kubeconfig)})})
        conf = {"source": "prometheus", "prometheus_conn_id": "e2e_prometheus_patch", "selector": 'namespace="ml"',
                "window_hours": 72, "recommender": "effopt", "mode": "patch", "kubernetes_conn_id": "e2e_kubernetes"}

        run_id, state = client.run_dag("effopt_rightsizing", conf)
        assert state == "success", client.failure_report("effopt_rightsizing", run_id)
        applied = client.xcom("effopt_rightsizing", run_id, "apply")
        assert applied["mode"] == "patch" and applied["applied"] == 1, applied
        (item,) = applied["plan"]["items"]
        assert item["action"] == "apply" and item["replicas"] == 3, item  # re-planned on the live object

        path = "/apis/apps/v1/namespaces/ml/deployments/trainer"
        (patch,) = cluster.patches()
        assert (patch.path, patch.content_type) == (path, "application/strategic-merge-patch+json")
        assert patch.body["metadata"] == {"resourceVersion": live["metadata"]["resourceVersion"]}
        (sent,) = patch.body["spec"]["template"]["spec"]["containers"]
        assert sent["name"] == "main"
        # Steady 0.5 core / 400 MiB against 2 cores / 2 GiB: the guardrails' max step (-50% per apply)
        # bounds the first cut, so exactly half of each is asked for.
        assert sent["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
        after = cluster.get("apps/v1", "deployments", "ml", "trainer")
        assert container_resources(after, "main") == sent["resources"]
        local = kubectl_patch_local(live, patch.body, tmp_path)  # kubectl accepts the very patch sent
        assert container_resources(local, "main") == sent["resources"]

        store = EffoptStore(airflow.store_url)
        try:
            (audit,) = store.rightsizing_audit(kind="Deployment", namespace="ml", name="trainer")
        finally:
            store.dispose()
        assert (audit.mode, audit.container) == ("patch", "main")
        assert audit.before == {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}, audit
        assert audit.after == sent["resources"], audit

        # The effopt page and its JSON show the change to a logged-in user.
        (shown,) = [c for c in client.get("/effopt/api/rightsizing")
                    if (c["namespace"], c["name"]) == ("ml", "trainer")]
        assert (shown["kind"], shown["mode"], shown["after"]) == ("Deployment", "patch", sent["resources"])
        page = client.request("GET", "/effopt/")
        assert "Deployment ml/trainer" in page and "requests.cpu 2 -&gt; 1" in page, page

        # A second run inside the cooldown changes nothing: the audit record blocks it.
        run_id, state = client.run_dag("effopt_rightsizing", conf)
        assert state == "success", client.failure_report("effopt_rightsizing", run_id)
        again = client.xcom("effopt_rightsizing", run_id, "apply")
        assert again["applied"] == 0 and len(cluster.patches()) == 1, again
        (item,) = again["plan"]["items"]
        assert item["action"] == "skip" and any("cooldown" in g for g in item["guardrails"]), item
    finally:
        cluster.close()
