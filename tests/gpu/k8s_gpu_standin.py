"""The Kubernetes API stand-in (tests/k8s_standin.py) plus what a GPU inventory reads: core/v1 nodes and pods.

``GET /api/v1/nodes`` (``labelSelector`` with ``key=value`` terms) and ``GET /api/v1/pods`` (all namespaces;
``fieldSelector`` with ``status.phase`` / ``spec.nodeName`` ``=`` and ``!=`` terms, as the real server filters).
Other paths go to the base stand-in.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import parse_qs

from tests.k8s_standin import K8sStandIn


def _field(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = (cur or {}).get(part)
    return "" if cur is None else str(cur)


def _matches(obj: dict[str, Any], selector: str, resolve) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if resolve(obj, key) == value:
                return False
        else:
            key, value = term.split("=", 1)
            if resolve(obj, key.rstrip("=")) != value:
                return False
    return True


class GpuK8sStandIn(K8sStandIn):
    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[dict[str, Any]] = []
        self.pods: list[dict[str, Any]] = []

    def add_node(self, name: str, gpus: int = 0, product: str = "", memory_mib: int = 0, mig: dict | None = None,
                 cpu: str = "32", memory: str = "256Gi", unschedulable: bool = False) -> None:
        labels = {"kubernetes.io/hostname": name}
        if product:
            labels["nvidia.com/gpu.product"] = product
        if memory_mib:
            labels["nvidia.com/gpu.memory"] = str(memory_mib)
        allocatable = {"cpu": cpu, "memory": memory, "pods": "110"}
        if gpus:
            allocatable["nvidia.com/gpu"] = str(gpus)
        for profile, n in (mig or {}).items():
            allocatable[f"nvidia.com/mig-{profile}"] = str(n)
        self.nodes.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
                           "spec": {"unschedulable": unschedulable}, "status": {"allocatable": allocatable}})

    def add_pod(self, name: str, node: str, limits: dict[str, str], phase: str = "Running", namespace: str = "ml",
                labels: dict[str, str] | None = None) -> None:
        self.pods.append({"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
                          "spec": {"nodeName": node, "containers": [
                              {"name": "main", "image": "img:1", "resources": {"limits": limits}}]},
                          "status": {"phase": phase}})

    def _route(self, method: str, path: str, body: Any, content_type: str | None) -> tuple[int, dict[str, Any]]:
        if method == "GET" and path in ("/api/v1/nodes", "/api/v1/pods"):
            query = parse_qs(next(r.query for r in reversed(self.requests) if r.path == path))
            with self._lock:
                if path == "/api/v1/nodes":
                    sel = (query.get("labelSelector") or [""])[0]
                    items = [copy.deepcopy(n) for n in self.nodes
                             if _matches(n, sel, lambda o, k: (o["metadata"].get("labels") or {}).get(k, ""))]
                    return 200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                                 "items": items}
                sel = (query.get("fieldSelector") or [""])[0]
                items = [copy.deepcopy(p) for p in self.pods if _matches(p, sel, _field)]
                return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                             "items": items}
        return super()._route(method, path, body, content_type)
