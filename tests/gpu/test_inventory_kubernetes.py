"""The Kubernetes GPU inventory through ``KubernetesHook(...).api_client``, against the local API stand-in."""

from __future__ import annotations

import json

import pytest

from effopt.gpu.inventory import InventoryError, InventoryUnavailable, KubernetesInventory
from tests.gpu.k8s_gpu_standin import GpuK8sStandIn


@pytest.fixture
def gpu_cluster(tmp_path, monkeypatch):
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    server = GpuK8sStandIn().start()
    config = server.kubeconfig(tmp_path / "kubeconfig.yaml")
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT",
                       json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(config)}}))
    yield server, KubernetesHook(conn_id="kubernetes_default")
    server.close()


def test_nodes_gpus_mig_slices_labels_and_running_pods(gpu_cluster):
    server, hook = gpu_cluster
    server.add_node("a100-0", gpus=4, product="NVIDIA-A100-SXM4-80GB", memory_mib=81920, cpu="96", memory="1Ti")
    server.add_node("mig-0", gpus=0, product="NVIDIA-A100-SXM4-40GB", mig={"3g.20gb": 2, "1g.5gb": 1})
    server.add_node("cpu-0")  # no GPU: left out
    server.add_node("cordoned", gpus=8, product="NVIDIA-H100-80GB-HBM3", unschedulable=True)
    server.add_pod("train-1", "a100-0", {"nvidia.com/gpu": "2", "cpu": "8"})
    server.add_pod("done", "a100-0", {"nvidia.com/gpu": "1"}, phase="Succeeded")  # finished: not running
    server.add_pod("leased", "a100-0", {"nvidia.com/gpu": "1"}, labels={"effopt.io/gpu-lease": "abc123"})
    server.add_pod("slice", "mig-0", {"nvidia.com/mig-3g.20gb": "1"})
    server.add_pod("web", "cpu-0", {"cpu": "1"})
    inv = KubernetesInventory(hook.api_client).read()
    assert [n.name for n in inv.nodes] == ["a100-0", "mig-0"]
    assert inv.detail == "4 Kubernetes node(s), 1 cordoned left out"
    a100 = inv.node("a100-0")
    assert [(g.index, g.model, g.memory_total_mib) for g in a100.gpus] == [
        (i, "A100-SXM4-80GB", 81920) for i in range(4)]
    assert (a100.cpu_milli, a100.memory_mib) == (96000, 1024 * 1024)
    assert [(r.name, r.num_gpu, r.model, r.lease_id) for r in a100.running] == \
        [("ml/train-1", 2, "", ""), ("ml/leased", 1, "", "abc123")]
    mig = inv.node("mig-0")
    assert sorted(s.profile for s in mig.mig) == ["1g.5gb", "3g.20gb", "3g.20gb"] and mig.gpus == ()
    assert [(r.name, r.num_gpu, r.model) for r in mig.running] == [("ml/slice", 1, "mig-3g.20gb")]
    assert inv.models() == {"A100-SXM4-80GB": 4, "mig-1g.5gb": 1, "mig-3g.20gb": 2}
    # What the stand-in was asked, as the real API server would be.
    asked = [(r.path, r.query) for r in server.requests]
    assert ("/api/v1/pods", "fieldSelector=status.phase%21%3DSucceeded%2Cstatus.phase%21%3DFailed") in asked


def test_a_label_selector_picks_the_gpu_node_pool(gpu_cluster):
    server, hook = gpu_cluster
    server.add_node("a", gpus=1, product="Tesla-T4")
    server.add_node("b", gpus=1, product="Tesla-T4")
    inv = KubernetesInventory(hook.api_client, label_selector="kubernetes.io/hostname=b").read()
    assert [n.name for n in inv.nodes] == ["b"]


def test_a_fractional_gpu_quantity_is_named(gpu_cluster):
    server, hook = gpu_cluster
    server.add_node("a", gpus=1, product="Tesla-T4")
    server.nodes[0]["status"]["allocatable"]["nvidia.com/gpu"] = "1500m"
    with pytest.raises(InventoryError, match="node a allocatable nvidia.com/gpu: '1500m' is not a whole number"):
        KubernetesInventory(hook.api_client).read()


def test_an_api_that_does_not_answer_is_transient(gpu_cluster):
    server, hook = gpu_cluster
    client = hook.api_client
    server.close()
    with pytest.raises(InventoryUnavailable) as err:
        KubernetesInventory(client).read()
    assert err.value.transient
