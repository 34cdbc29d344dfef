"""RightSizingApplyOperator in each mode, executed in-process.

``patch`` talks through KubernetesHook and the official client to the local
HTTP stand-in of the Kubernetes API (``tests/k8s_standin.py``): there is no
real API server on this machine.
"""

from __future__ import annotations

import pytest
import yaml

from effopt.operators.rightsizing import RightSizingApplyOperator
from effopt.rightsizing.apply import ResourceChange, Resources, WorkloadRef
from effopt.rightsizing.recommend import change_to_dict
from tests.rightsizing.apply.conftest import GIB, deployment


def _recommendation(name: str = "web") -> dict:
    # Each test uses its own workload: applies are audited in the (session's) effopt store, whose
    # cooldown would otherwise hold back a later test's plan.
    change = ResourceChange(WorkloadRef("Deployment", "shop", name), "app",
                            Resources(cpu_request=2.0, memory_request=2 * GIB, memory_limit=2 * GIB),
                            Resources(cpu_request=1.5, memory_request=int(1.5 * GIB), memory_limit=int(1.5 * GIB)),
                            reason="test", memory_peak_bytes=GIB)
    return {"changes": [change_to_dict(change)], "plan": {"items": []}}


def test_patch_mode_patches_the_live_deployment(standin, kube_hook):
    standin.add(deployment("web", "shop"))
    out = RightSizingApplyOperator(task_id="apply", recommendation=_recommendation(), mode="patch").execute({})
    assert out["mode"] == "patch" and out["applied"] == 1
    (patch,) = standin.patches()
    assert patch.path == "/apis/apps/v1/namespaces/shop/deployments/web"
    live = standin.get("apps/v1", "deployments", "shop", "web")
    app = next(c for c in live["spec"]["template"]["spec"]["containers"] if c["name"] == "app")
    assert app["resources"]["requests"] == {"cpu": "1500m", "memory": "1536Mi"}
    assert app["resources"]["limits"]["memory"] == "1536Mi"


def test_patch_mode_uses_the_configured_kubernetes_connection(standin, tmp_path, monkeypatch):
    """Without ``kubernetes_conn_id`` the operator uses ``[effopt] kubernetes_conn_id``, not ``kubernetes_default``
    (which here names a kube config of a closed port: using it would fail)."""
    import json

    from effopt.airflow_settings import get_settings

    standin.add(deployment("web-configured", "shop"))
    good = standin.kubeconfig(tmp_path / "good.yaml")
    dead = tmp_path / "dead.yaml"
    dead.write_text(good.read_text().replace(standin.url, "http://127.0.0.1:9"))
    for conn, config in (("PROD_K8S", good), ("KUBERNETES_DEFAULT", dead)):
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn}",
                           json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(config)}}))
    monkeypatch.setenv("AIRFLOW__EFFOPT__KUBERNETES_CONN_ID", "prod_k8s")
    get_settings.cache_clear()
    try:
        out = RightSizingApplyOperator(task_id="apply", recommendation=_recommendation("web-configured"),
                                       mode="patch").execute({})
    finally:
        get_settings.cache_clear()
    assert out["applied"] == 1
    assert [p.path for p in standin.patches()] == ["/apis/apps/v1/namespaces/shop/deployments/web-configured"]


@pytest.mark.parametrize("mode", ["vpa", "gitops"])
def test_manifest_modes_write_files(tmp_path, mode):
    name = f"web-{mode}"
    out = RightSizingApplyOperator(task_id="apply", recommendation=_recommendation(name), mode=mode,
                                   output_dir=str(tmp_path)).execute({})
    assert out["files"] and all(p.startswith(str(tmp_path)) for p in out["files"])
    docs = [yaml.safe_load(open(p)) for p in out["files"]]
    if mode == "vpa":
        assert docs[0]["kind"] == "VerticalPodAutoscaler" and docs[0]["spec"]["targetRef"]["name"] == name
    else:
        assert any(d.get("kind") == "Kustomization" for d in docs)
        assert any(d.get("metadata", {}).get("name") == name for d in docs if d.get("kind") == "Deployment")


def test_unknown_mode_and_missing_output_dir_are_named_and_fail_without_a_retry():
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="unknown mode 'yolo'.*not retried"):
        RightSizingApplyOperator(task_id="a", recommendation=_recommendation(), mode="yolo").execute({})
    with pytest.raises(AirflowFailException, match="mode 'vpa' needs output_dir"):
        RightSizingApplyOperator(task_id="a", recommendation=_recommendation(), mode="vpa").execute({})
