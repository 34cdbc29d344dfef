"""Fixtures of the apply tests: the Kubernetes API stand-in, a KubernetesHook pointed at it,
a throwaway effopt store, a hand-made rate table and kubectl helpers."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from effopt.prices import parse_rate_table
from effopt.store import EffoptStore
from tests.k8s_standin import K8sStandIn

MIB = 1024**2
GIB = 1024**3

# Round numbers so cost deltas can be computed by hand in the tests.
RATES = {
    "schema": 1,
    "hours_per_month": 730,
    "source": {"file": "hand-made for tests"},
    "method": "fixed test rates",
    "rates": {"on_demand": {"cpu_per_vcpu_hour": 0.04, "memory_per_gib_hour": 0.005,
                            "gpu_per_hour": {"A10G": 1.0}}},
}


@pytest.fixture
def rates():
    return parse_rate_table(RATES, "test-rates")


@pytest.fixture
def standin():
    server = K8sStandIn().start()
    yield server
    server.close()


@pytest.fixture
def kube_hook(standin, tmp_path, monkeypatch):
    """``KubernetesHook`` on the ``kubernetes_default`` connection, whose ``kube_config_path`` extra
    (set through ``AIRFLOW_CONN_KUBERNETES_DEFAULT``) points at a kube config for the stand-in."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    config = standin.kubeconfig(tmp_path / "kubeconfig.yaml")
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT",
                       json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(config)}}))
    return KubernetesHook(conn_id="kubernetes_default")


@pytest.fixture
def store(tmp_path):
    s = EffoptStore(f"sqlite:///{tmp_path}/effopt.db")
    yield s
    s.dispose()


def deployment(name: str = "web", namespace: str = "shop", kind: str = "Deployment", replicas: int = 2,
               containers: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    containers = containers if containers is not None else {
        "app": {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
        "sidecar": {"requests": {"cpu": "100m", "memory": "128Mi"}},
    }
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
            {"name": c, "image": "registry.local/img:1", "resources": r} for c, r in containers.items()]}},
    }
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def hpa(target: str, namespace: str = "shop", resource: str = "cpu") -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": f"{target}-hpa", "namespace": namespace},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "minReplicas": 1, "maxReplicas": 5,
                     "metrics": [{"type": "Resource", "resource": {"name": resource, "target": {
                         "type": "Utilization", "averageUtilization": 70}}}]}}


def kubectl(*args: str, timeout: float = 60) -> str:
    """Run kubectl; fail the test with its stderr when it exits non-zero."""
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not installed")
    proc = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"kubectl {' '.join(args)} failed: {proc.stderr}"
    return proc.stdout


def kubectl_patch_local(manifest: dict[str, Any], patch: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """``kubectl patch --local -f <manifest> --type strategic -p <patch> -o yaml`` (no server involved)."""
    path = tmp_path / f"{manifest['metadata']['name']}-{manifest['kind'].lower()}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return yaml.safe_load(kubectl("patch", "--local", "-f", str(path), "--type", "strategic",
                                  "-p", json.dumps(patch), "-o", "yaml"))


def container_resources(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == name)["resources"]
