"""GPU nodes of a Kubernetes cluster, through the official client (the Airflow layer passes
``KubernetesHook(...).api_client``).

Per node (cordoned ones left out): allocatable ``nvidia.com/gpu`` (whole GPUs) and ``nvidia.com/mig-<profile>``
(MIG slices, the device plugin's mixed strategy), the GPU feature discovery labels ``nvidia.com/gpu.product``
(the model) and ``nvidia.com/gpu.memory`` (MiB per GPU), allocatable CPU and memory. Pods bound to a node and
not finished that ask for GPUs (limits, else requests) are its running requests; a pod labelled
``effopt.io/gpu-lease`` runs under that effopt lease. Kubernetes does not say which device a pod got: the
lease logic counts such requests on the first free GPUs of the node.
"""

from __future__ import annotations

from typing import Any

from effopt.gpu.inventory.base import (
    GpuDevice,
    Inventory,
    InventoryError,
    InventoryNode,
    InventorySource,
    InventoryUnavailable,
    MigSlice,
    RunningRequest,
    mig_model,
    normalize_model,
)
from effopt.gpu.model import MILLI

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
PRODUCT_LABEL = "nvidia.com/gpu.product"
MEMORY_LABEL = "nvidia.com/gpu.memory"
LEASE_LABEL = "effopt.io/gpu-lease"
UNLABELLED = "unlabelled"
MIB = 1024 * 1024


def _quantity(value: Any, where: str) -> float:
    from kubernetes.utils.quantity import parse_quantity

    try:
        return float(parse_quantity(str(value)))
    except (ValueError, ArithmeticError):
        raise InventoryError(f"{where}: {value!r} is not a Kubernetes quantity") from None


def _count(value: Any, where: str) -> int:
    q = _quantity(value, where)
    if q < 0 or q != int(q):
        raise InventoryError(f"{where}: {value!r} is not a whole number of devices")
    return int(q)


class KubernetesInventory(InventorySource):
    kind = "kubernetes"

    def __init__(self, api_client: Any, label_selector: str = "") -> None:
        self.api_client = api_client
        self.label_selector = label_selector

    def read(self) -> Inventory:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self.api_client)
        try:
            nodes = core.list_node(label_selector=self.label_selector or None).items
            pods = core.list_pod_for_all_namespaces(
                field_selector="status.phase!=Succeeded,status.phase!=Failed").items
        except ApiException as exc:
            transient = exc.status is None or exc.status >= 500 or exc.status == 429
            raise InventoryUnavailable(f"Kubernetes API refused listing nodes and pods (HTTP {exc.status}: "
                                       f"{exc.reason})", transient=transient) from exc
        except Exception as exc:  # noqa: BLE001 - urllib3 connection errors and the like: the API did not answer
            raise InventoryUnavailable(f"Kubernetes API unreachable: {type(exc).__name__}: {exc}",
                                       transient=True) from exc
        by_node: dict[str, list[RunningRequest]] = {}
        for pod in pods:
            node = pod.spec.node_name if pod.spec else None
            if node:
                req = self._pod_request(pod)
                if req is not None:
                    by_node.setdefault(node, []).append(req)
        out, cordoned = [], 0
        for node in nodes:
            if node.spec is not None and node.spec.unschedulable:
                cordoned += 1
                continue
            out.append(self._node(node, by_node.get(node.metadata.name, [])))
        detail = f"{len(nodes)} Kubernetes node(s)" + (f", {cordoned} cordoned left out" if cordoned else "")
        return Inventory.of(out, self.kind, detail)

    @staticmethod
    def _node(node: Any, running: list[RunningRequest]) -> InventoryNode:
        name = node.metadata.name
        where = f"node {name}"
        labels = node.metadata.labels or {}
        alloc = (node.status.allocatable if node.status else None) or {}
        count = _count(alloc.get(GPU_RESOURCE, 0), f"{where} allocatable {GPU_RESOURCE}")
        model = normalize_model(labels.get(PRODUCT_LABEL) or UNLABELLED)
        memory = 0
        if labels.get(MEMORY_LABEL):
            try:
                memory = int(labels[MEMORY_LABEL])
            except ValueError:
                raise InventoryError(f"{where}: label {MEMORY_LABEL}={labels[MEMORY_LABEL]!r} is not MiB") from None
        gpus = tuple(GpuDevice(i, model, memory_total_mib=memory) for i in range(count))
        mig = []
        for resource, value in sorted(alloc.items()):
            if resource.startswith(MIG_RESOURCE_PREFIX):
                profile = resource[len(MIG_RESOURCE_PREFIX):]
                mig += [MigSlice(profile) for _ in range(_count(value, f"{where} allocatable {resource}"))]
        cpu = int(_quantity(alloc.get("cpu", 0), f"{where} allocatable cpu") * 1000)
        mem = int(_quantity(alloc.get("memory", 0), f"{where} allocatable memory") // MIB)
        return InventoryNode(name, gpus, tuple(mig), tuple(running), cpu, mem)

    @staticmethod
    def _pod_request(pod: Any) -> RunningRequest | None:
        name = f"{pod.metadata.namespace}/{pod.metadata.name}"
        whole, slices = 0, {}
        for c in pod.spec.containers or []:
            res = c.resources
            asked = dict((res.requests or {}) if res else {})
            asked.update((res.limits or {}) if res else {})
            for resource, value in asked.items():
                where = f"pod {name} container {c.name} {resource}"
                if resource == GPU_RESOURCE:
                    whole += _count(value, where)
                elif resource.startswith(MIG_RESOURCE_PREFIX):
                    profile = resource[len(MIG_RESOURCE_PREFIX):]
                    slices[profile] = slices.get(profile, 0) + _count(value, where)
        lease = (pod.metadata.labels or {}).get(LEASE_LABEL, "")
        if whole:
            return RunningRequest(name, whole, MILLI, "", (), lease)
        if slices:  # a pod asks one kind of slice in practice; the first stands for it
            profile, n = next(iter(sorted(slices.items())))
            return RunningRequest(name, n, MILLI, mig_model(profile), (), lease)
        return None
