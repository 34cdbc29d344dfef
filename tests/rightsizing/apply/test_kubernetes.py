"""Apply mode (a): patches through KubernetesHook.

There is no real Kubernetes API server on this machine: every test here runs the
official ``kubernetes`` client through Airflow's ``KubernetesHook`` against
``tests.k8s_standin.K8sStandIn``, a local HTTP stand-in on 127.0.0.1 that records
requests.  The hook finds it through the ``kubernetes_default`` connection
(``AIRFLOW_CONN_KUBERNETES_DEFAULT`` JSON whose ``kube_config_path`` extra names a
kube config with ``server: http://127.0.0.1:<port>`` and no auth).  Every patch is
also checked offline with ``kubectl patch --local``.
"""

from __future__ import annotations

import pytest

from effopt.rightsizing.apply import (
    ApplyError,
    GuardrailSettings,
    KubernetesApplier,
    ResourceChange,
    Resources,
    WorkloadRef,
)
from tests.rightsizing.apply.conftest import (
    GIB,
    MIB,
    container_resources,
    deployment,
    hpa,
    kubectl_patch_local,
)

WEB = WorkloadRef("Deployment", "shop", "web")
DB = WorkloadRef("StatefulSet", "shop", "db")
NOW = 1_800_000_000.0
PATH_WEB = "/apis/apps/v1/namespaces/shop/deployments/web"
PATH_DB = "/apis/apps/v1/namespaces/shop/statefulsets/db"


def _changes() -> list[ResourceChange]:
    # "current" is what the recommender saw; the applier replaces it with the live values
    return [
        ResourceChange(WEB, "app", Resources(), Resources(cpu_request=1.5, memory_request=1536 * MIB,
                                                          memory_limit=1536 * MIB),
                       "p95 cpu 1.2 cores, peak memory 1.3Gi + 15%", memory_peak_bytes=1300 * MIB),
        ResourceChange(DB, "postgres", Resources(), Resources(memory_request=3 * GIB, memory_limit=3 * GIB),
                       "OOM kill at 4Gi: bump", memory_peak_bytes=2 * GIB),
    ]


@pytest.fixture
def cluster(standin):
    standin.add(deployment())
    standin.add(deployment("db", kind="StatefulSet", replicas=1, containers={
        "postgres": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}}))
    return standin


def test_plan_is_dry_run_and_apply_sends_exact_patches(cluster, kube_hook, store, rates, tmp_path):
    before = {PATH_WEB: cluster.get("apps/v1", "deployments", "shop", "web"),
              PATH_DB: cluster.get("apps/v1", "statefulsets", "shop", "db")}
    applier = KubernetesApplier(kube_hook.api_client, store, conflict_backoff_s=0)
    plan = applier.plan(_changes(), rates, now=NOW)
    assert cluster.patches() == []  # planning never patches
    web, db = plan.items
    assert web.change.replicas == 2 and web.change.current == Resources(cpu_request=2, memory_request=2 * GIB,
                                                                        memory_limit=2 * GIB)
    assert web.monthly_cost_delta == pytest.approx(2 * (-0.5 * 0.04 - 0.5 * 0.005) * 730)
    assert db.monthly_cost_delta == pytest.approx(1 * (1 * 0.005) * 730)

    result = applier.apply(plan, now=NOW)
    patches = cluster.patches()
    assert [(p.path, p.content_type) for p in patches] == [
        (PATH_WEB, "application/strategic-merge-patch+json"), (PATH_DB, "application/strategic-merge-patch+json")]
    assert patches[0].body == {
        "metadata": {"resourceVersion": before[PATH_WEB]["metadata"]["resourceVersion"]},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "resources": {
            "requests": {"cpu": "1500m", "memory": "1536Mi"}, "limits": {"memory": "1536Mi"}}}]}}},
    }
    assert patches[1].body["spec"]["template"]["spec"]["containers"] == [
        {"name": "postgres", "resources": {"requests": {"memory": "3Gi"}, "limits": {"memory": "3Gi"}}}]
    # the stand-in merged them as the API server would; the sidecar is untouched
    live = cluster.get("apps/v1", "deployments", "shop", "web")
    assert container_resources(live, "app") == {"requests": {"cpu": "1500m", "memory": "1536Mi"},
                                                "limits": {"memory": "1536Mi"}}
    assert container_resources(live, "sidecar") == {"requests": {"cpu": "100m", "memory": "128Mi"}}
    # kubectl, offline, accepts each patch and produces the same resources
    for p in patches:
        body = {k: v for k, v in p.body.items() if k != "metadata"}
        out = kubectl_patch_local(before[p.path], body, tmp_path)
        for c in body["spec"]["template"]["spec"]["containers"]:
            old = container_resources(before[p.path], c["name"])
            assert container_resources(out, c["name"]) == {
                section: {**old.get(section, {}), **c["resources"].get(section, {})}
                for section in {*old, *c["resources"]}}
    # audit records
    audit = store.rightsizing_audit()
    assert [(a.kind, a.name, a.container, a.mode) for a in audit] == [
        ("Deployment", "web", "app", "patch"), ("StatefulSet", "db", "postgres", "patch")]
    assert audit[0].before == {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}
    assert audit[0].after == {"requests": {"cpu": "1500m", "memory": "1536Mi"}, "limits": {"memory": "1536Mi"}}
    assert audit[0].applied_at == NOW and audit[0].reason.startswith("p95 cpu 1.2 cores")
    assert audit[0].resource_version == live["metadata"]["resourceVersion"]
    assert audit[0].monthly_cost_delta == pytest.approx(web.monthly_cost_delta)
    assert len(result.applied) == 2 and result.conflicts_retried == 0


def test_conflict_is_retried_with_the_new_resource_version(cluster, kube_hook, store, rates):
    applier = KubernetesApplier(kube_hook.api_client, store, conflict_backoff_s=0)
    plan = applier.plan(_changes()[:1], rates, now=NOW)
    cluster.conflict_next_patches(2)
    result = applier.apply(plan, now=NOW)
    patches = cluster.patches()
    assert len(patches) == 3 and result.conflicts_retried == 2
    versions = [p.body["metadata"]["resourceVersion"] for p in patches]
    assert len(set(versions)) == 3  # each retry re-read the workload
    gets = [r.path for r in cluster.requests if r.method == "GET" and r.path == PATH_WEB]
    assert len(gets) == 1 + 1 + 2  # plan, apply check, one re-read per conflict
    assert container_resources(cluster.get("apps/v1", "deployments", "shop", "web"),
                               "app")["requests"]["cpu"] == "1500m"
    assert len(store.rightsizing_audit()) == 1


def test_conflicts_beyond_the_retry_budget_fail_clearly(cluster, kube_hook, store, rates):
    applier = KubernetesApplier(kube_hook.api_client, store, max_conflict_retries=1, conflict_backoff_s=0)
    plan = applier.plan(_changes()[:1], rates, now=NOW)
    cluster.conflict_next_patches(5)
    with pytest.raises(ApplyError, match=r"Deployment shop/web: PATCH failed \(409 Conflict\) after 1 conflict retry; "
                                         r"0 container change\(s\) were applied before it"):
        applier.apply(plan, now=NOW)
    assert len(cluster.patches()) == 2
    assert store.rightsizing_audit() == []


def test_cooldown_from_audit_records(cluster, kube_hook, store, rates):
    applier = KubernetesApplier(kube_hook.api_client, store, conflict_backoff_s=0)
    applier.apply(applier.plan(_changes()[:1], rates, now=NOW), now=NOW)
    again = [ResourceChange(WEB, "app", Resources(), Resources(cpu_request=1.0), "lower again")]
    soon = applier.plan(again, rates, now=NOW + 3600)
    assert soon.items[0].action == "skip" and "cooldown" in soon.items[0].decisions[0]
    assert applier.apply(soon, now=NOW + 3600).applied == [] and len(cluster.patches()) == 1
    later = applier.plan(again, rates, now=NOW + 25 * 3600)
    assert later.items[0].action == "apply"
    applier.apply(later, now=NOW + 25 * 3600)
    assert len(cluster.patches()) == 2


def test_hpa_on_the_same_resource_is_skipped(cluster, kube_hook, store, rates):
    cluster.add(hpa("web", resource="cpu"))
    applier = KubernetesApplier(kube_hook.api_client, store, conflict_backoff_s=0)
    plan = applier.plan(_changes()[:1], rates, now=NOW)
    (item,) = plan.items
    assert item.planned.cpu_request is None and item.planned.memory_request == 1536 * MIB
    assert "HorizontalPodAutoscaler scales Deployment shop/web on cpu" in item.decisions[0]
    assert any(r.path == "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers" for r in cluster.requests)
    applier.apply(plan, now=NOW)
    (patch,) = cluster.patches()
    assert patch.body["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"memory": "1536Mi"}, "limits": {"memory": "1536Mi"}}


def test_guardrails_block_unsafe_changes_before_the_cluster(cluster, kube_hook, store, rates):
    unsafe = [ResourceChange(WEB, "app", Resources(), Resources(cpu_request=0.2, memory_request=256 * MIB,
                                                                memory_limit=256 * MIB),
                             "aggressive", memory_peak_bytes=1800 * MIB)]
    applier = KubernetesApplier(kube_hook.api_client, store, conflict_backoff_s=0)
    plan = applier.plan(unsafe, rates, GuardrailSettings(max_step_down=0.5), now=NOW)
    applier.apply(plan, now=NOW)
    (patch,) = cluster.patches()
    # cpu at most -50% of 2 cores; memory never below the 1800Mi peak
    assert patch.body["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "memory": "1800Mi"}, "limits": {"memory": "1800Mi"}}


def test_nothing_is_patched_when_any_workload_is_bad(cluster, kube_hook, store, rates):
    applier = KubernetesApplier(kube_hook.api_client, store, conflict_backoff_s=0)
    missing = [*_changes(), ResourceChange(WorkloadRef("Deployment", "shop", "ghost"), "app", Resources(),
                                           Resources(cpu_request=1), "r")]
    with pytest.raises(ApplyError, match=r"Deployment shop/ghost: cannot be read \(404"):
        applier.plan(missing, rates, now=NOW)
    no_container = [ResourceChange(WEB, "nginx", Resources(), Resources(cpu_request=1), "r")]
    with pytest.raises(ApplyError, match="Deployment shop/web: has no container 'nginx'"):
        applier.plan(no_container, rates, now=NOW)
    # a plan whose basis changed after planning: the check runs before the first PATCH
    plan = applier.plan(_changes(), rates, now=NOW)
    db = cluster.get("apps/v1", "statefulsets", "shop", "db")
    db["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"] = "5Gi"
    db["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "5Gi"
    cluster.add(db)
    with pytest.raises(ApplyError, match="StatefulSet shop/db container postgres: resources changed since the plan"):
        applier.apply(plan, now=NOW)
    assert cluster.patches() == [] and store.rightsizing_audit() == []
    with pytest.raises(ApplyError, match="kind 'CronJob' cannot be patched"):
        applier.plan([ResourceChange(WorkloadRef("CronJob", "shop", "x"), "c", Resources(), Resources(cpu_request=1),
                                     "r")], rates, now=NOW)
