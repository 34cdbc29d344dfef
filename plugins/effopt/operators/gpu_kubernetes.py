"""``KubernetesPodOperator`` with a GPU lease: the pod is pinned to the leased node and asks for the devices.

The lease (see :class:`~effopt.operators.gpu.GpuTaskMixin`) may land on any node of the inventory (set
``[effopt] gpu_inventory = kubernetes`` so it is the cluster's). Before the pod is built the operator adds a
required node affinity ``metadata.name In [<node>]`` (``matchFields``) (beside any affinity you gave), puts
``nvidia.com/gpu: <n>`` (or ``nvidia.com/mig-<profile>: <n>`` for a MIG slice) in the container's limits and
requests, and labels the pod ``effopt.io/gpu-lease: <lease id>`` (the Kubernetes inventory counts such a pod
through its lease, not twice). A request for part of a GPU asks one device: the node shares it (time-slicing or
MPS), the lease keeps the parts from over-committing it. The task waits for the pod (``deferrable=False``) so
that it renews the lease while the pod runs, and releases it when the pod ends.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

from effopt.gpu.inventory.kubernetes import LEASE_LABEL
from effopt.gpu.leases import Lease
from effopt.operators.gpu import GpuTaskMixin


def gpu_pod_resources(lease: Lease, existing: Any = None) -> Any:
    """The container's resources with the lease's device resource in its limits and requests."""
    from kubernetes.client import models as k8s

    resource = f"nvidia.com/mig-{lease.mig_profile}" if lease.mig_profile else "nvidia.com/gpu"
    count = str(lease.num_gpu)  # a shared GPU (gpu_milli < 1000) is one device under time-slicing or MPS
    limits = dict(getattr(existing, "limits", None) or {})
    requests = dict(getattr(existing, "requests", None) or {})
    limits[resource] = count
    requests[resource] = count
    return k8s.V1ResourceRequirements(limits=limits, requests=requests)


def gpu_node_affinity(node: str, existing: Any = None) -> Any:
    """Required node affinity to the node named ``node`` (``matchFields`` on ``metadata.name``: the inventory's
    node names are the Node objects' names, which the ``kubernetes.io/hostname`` label need not equal), kept
    beside any affinity given."""
    from kubernetes.client import models as k8s

    term = k8s.V1NodeSelectorTerm(match_fields=[
        k8s.V1NodeSelectorRequirement(key="metadata.name", operator="In", values=[node])])
    affinity = existing if existing is not None else k8s.V1Affinity()
    node_affinity = affinity.node_affinity or k8s.V1NodeAffinity()
    prior = node_affinity.required_during_scheduling_ignored_during_execution
    if prior is not None and prior.node_selector_terms:
        # Terms are ORed: add the node to every one, so each still holds and all land on the node.
        for t in prior.node_selector_terms:
            t.match_fields = list(t.match_fields or []) + term.match_fields
    else:
        node_affinity.required_during_scheduling_ignored_during_execution = k8s.V1NodeSelector(
            node_selector_terms=[term])
    affinity.node_affinity = node_affinity
    return affinity


class GpuKubernetesPodOperator(GpuTaskMixin, KubernetesPodOperator):
    """A pod on leased GPUs. Takes the GPU arguments of :class:`~effopt.operators.gpu.GpuTaskMixin` and every
    ``KubernetesPodOperator`` argument but ``deferrable`` (always False)."""

    local_devices = False

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("deferrable"):
            raise ValueError("GpuKubernetesPodOperator waits for its pod (deferrable=False): the task renews the GPU "
                             "lease while the pod runs")
        kwargs["deferrable"] = False
        super().__init__(**kwargs)

    def _gpu_hand_over(self, lease: Lease | None) -> None:
        if lease is None:
            self.log.warning("effopt: no GPU lease (no GPUs in the inventory): the pod asks for no GPU")
            return
        self.affinity = gpu_node_affinity(lease.node, self.affinity or None)
        self.container_resources = gpu_pod_resources(lease, self.container_resources)
        self.labels = {**(self.labels or {}), LEASE_LABEL: lease.lease_id}
        self.log.info("effopt: pod pinned to node %s with %s", lease.node, self.container_resources.limits)
