"""Apply modes (b) VPA YAML and (c) GitOps kustomize patches, validated by kubectl.

``kubectl apply --dry-run=client`` needs API discovery to map kinds to resources,
and there is no real Kubernetes API server on this machine: it runs against
``tests.k8s_standin.K8sStandIn`` (a local HTTP stand-in on 127.0.0.1 serving the
discovery documents, including the VPA CRD's ``autoscaling.k8s.io/v1``, and 404 for
the objects, so kubectl takes them as new), through a kube config written to tmp
(``--kubeconfig``).  ``--validate=false`` because the VPA is a CRD with no schema
there.  ``kubectl kustomize`` and ``kubectl patch --local`` need no server at all.
"""

from __future__ import annotations

import pytest
import yaml

from effopt.rightsizing.apply import ChangeError, ResourceChange, Resources, WorkloadRef, build_plan
from effopt.rightsizing.apply.manifests import vpa_manifests, write_kustomize, write_vpa
from tests.rightsizing.apply.conftest import GIB, MIB, container_resources, deployment, kubectl

WEB = WorkloadRef("Deployment", "shop", "web")
DB = WorkloadRef("StatefulSet", "shop", "db")
NOW = 1_800_000_000.0


@pytest.fixture
def plan(rates):
    changes = [
        ResourceChange(WEB, "app", Resources(cpu_request=2, memory_request=2 * GIB, memory_limit=2 * GIB),
                       Resources(cpu_request=1.5, memory_request=1536 * MIB, memory_limit=1536 * MIB), "p95 + 15%"),
        ResourceChange(WEB, "sidecar", Resources(cpu_request=0.1, memory_request=128 * MIB),
                       Resources(cpu_request=0.1, memory_request=128 * MIB), "already right"),
        ResourceChange(DB, "postgres", Resources(cpu_request=1, memory_request=2 * GIB, memory_limit=2 * GIB),
                       Resources(memory_request=3 * GIB, memory_limit=3 * GIB), "OOM bump"),
    ]
    return build_plan(changes, rates, now=NOW)


@pytest.fixture
def kubeconfig(standin, tmp_path):
    return str(standin.kubeconfig(tmp_path / "kubeconfig.yaml"))


def _dry_run(kubeconfig: str, path) -> list[dict]:
    out = kubectl("--kubeconfig", kubeconfig, "apply", "--dry-run=client", "--validate=false", "-f", str(path),
                  "-o", "yaml")
    doc = yaml.safe_load(out)
    return doc["items"] if doc.get("kind") == "List" else [doc]


@pytest.mark.parametrize("mode", ["Off", "Auto"])
def test_vpa_objects_accepted_by_kubectl(plan, kubeconfig, tmp_path, mode):
    paths = write_vpa(plan, tmp_path / "vpa", update_mode=mode)
    assert [p.name for p in paths] == ["vpa-shop-web-effopt.yaml", "vpa-shop-db-effopt.yaml"]
    web = _dry_run(kubeconfig, paths[0])[0]
    assert web["apiVersion"] == "autoscaling.k8s.io/v1" and web["kind"] == "VerticalPodAutoscaler"
    assert web["metadata"]["name"] == "web-effopt" and web["metadata"]["namespace"] == "shop"
    assert web["spec"]["targetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    assert web["spec"]["updatePolicy"] == {"updateMode": mode}
    # only the container that changes, pinned between its current and planned values
    assert web["spec"]["resourcePolicy"]["containerPolicies"] == [
        {"containerName": "app", "controlledResources": ["cpu", "memory"],
         "minAllowed": {"cpu": "1500m", "memory": "1536Mi"}, "maxAllowed": {"cpu": "2", "memory": "2Gi"}}]
    db = _dry_run(kubeconfig, paths[1])[0]
    assert db["spec"]["targetRef"]["kind"] == "StatefulSet"
    assert db["spec"]["resourcePolicy"]["containerPolicies"][0]["minAllowed"] == {"memory": "2Gi"}
    with pytest.raises(ChangeError, match="updateMode 'Sometimes'"):
        vpa_manifests(plan, "Sometimes")


def test_kustomize_patches_build_and_apply(plan, kubeconfig, tmp_path):
    out = tmp_path / "overlay"
    out.mkdir()
    (out / "base.yaml").write_text(yaml.safe_dump_all([
        deployment(), deployment("db", kind="StatefulSet", replicas=1, containers={
            "postgres": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}})]))
    paths = write_kustomize(plan, out, resources=["base.yaml"])
    assert sorted(p.name for p in paths) == [
        "effopt-deployment-shop-web.yaml", "effopt-statefulset-shop-db.yaml", "kustomization.yaml"]
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["base.yaml"]
    assert kustomization["patches"] == [{"path": "effopt-deployment-shop-web.yaml"},
                                        {"path": "effopt-statefulset-shop-db.yaml"}]
    built = {d["kind"]: d for d in yaml.safe_load_all(kubectl("kustomize", str(out)))}
    assert container_resources(built["Deployment"], "app") == {
        "requests": {"cpu": "1500m", "memory": "1536Mi"}, "limits": {"memory": "1536Mi"}}
    assert container_resources(built["Deployment"], "sidecar") == {"requests": {"cpu": "100m", "memory": "128Mi"}}
    assert container_resources(built["StatefulSet"], "postgres") == {
        "requests": {"cpu": "1", "memory": "3Gi"}, "limits": {"memory": "3Gi"}}
    # the built overlay and each patch file are accepted by kubectl apply
    (tmp_path / "built.yaml").write_text(kubectl("kustomize", str(out)))
    assert {d["kind"] for d in _dry_run(kubeconfig, tmp_path / "built.yaml")} == {"Deployment", "StatefulSet"}
    for p in paths[:-1]:
        (doc,) = _dry_run(kubeconfig, p)
        assert doc["metadata"]["namespace"] == "shop"
