"""Current requests and limits of Deployments and StatefulSets, read with the official ``kubernetes`` client.

Usage comes from a usage source (Prometheus, trace files); this source says
what each container is configured with now and which kind of workload it is,
so a plan patches the right object.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from effopt.workloads import Resources, WorkloadRef

_KINDS = (("Deployment", "list_namespaced_deployment"), ("StatefulSet", "list_namespaced_stateful_set"))


@dataclass(frozen=True)
class ContainerResources:
    workload: WorkloadRef
    container: str
    resources: Resources
    replicas: int

    @property
    def workload_name(self) -> str:
        """``namespace/name``, as usage sources name workloads."""
        return f"{self.workload.namespace}/{self.workload.name}"


class KubernetesSource:
    """Containers of the Deployments and StatefulSets in ``namespaces`` (optionally ``label_selector``)."""

    def __init__(self, api_client: Any, namespaces: Sequence[str], label_selector: str = "") -> None:
        if not namespaces:
            raise ValueError("KubernetesSource needs at least one namespace")
        self.api_client = api_client  # a kubernetes.client.ApiClient (KubernetesHook(...).api_client)
        self.namespaces = tuple(namespaces)
        self.label_selector = label_selector

    def containers(self) -> list[ContainerResources]:
        from kubernetes.client import AppsV1Api
        from kubernetes.client.exceptions import ApiException

        apps = AppsV1Api(self.api_client)
        out: list[ContainerResources] = []
        for namespace in self.namespaces:
            for kind, method in _KINDS:
                try:
                    raw = getattr(apps, method)(namespace, label_selector=self.label_selector,
                                                _preload_content=False)
                except ApiException as exc:
                    raise RuntimeError(f"cannot list {kind}s in namespace {namespace!r}: {exc.status} {exc.reason}"
                                       ) from None
                for obj in json.loads(raw.data).get("items", []):
                    out.extend(_containers(kind, obj))
        return out

    def kinds(self) -> dict[str, str]:
        """``{"namespace/name": kind}`` for :func:`effopt.rightsizing.recommend.to_changes`."""
        return {c.workload_name: c.workload.kind for c in self.containers()}


def _containers(kind: str, obj: dict[str, Any]) -> Iterable[ContainerResources]:
    meta = obj.get("metadata", {})
    ref = WorkloadRef(kind, meta.get("namespace", "default"), meta["name"])
    spec = obj.get("spec", {})
    for c in spec.get("template", {}).get("spec", {}).get("containers", []):
        yield ContainerResources(ref, c["name"], Resources.from_k8s(c.get("resources"), f"{ref} container {c['name']}"),
                                 int(spec.get("replicas", 1)))
