"""Apply mode (a): strategic merge patches of Deployment/StatefulSet container resources.

Talks to the cluster with the official ``kubernetes`` client, through the
``kubernetes.client.ApiClient`` it is given (the Airflow layer takes it from
``KubernetesHook(...).api_client``).  Each patch carries the ``resourceVersion`` it
was computed from, so a concurrent writer makes the API server answer
409 Conflict; the workload is then re-read and, if the container's resources
are still those the plan was based on, patched again with the new version.
Every applied container change is written to the effopt store's
``effopt_rightsizing_audit`` table.

Nothing is half-applied on bad input: the whole plan (every workload and
container exists, its resources match the plan's "current", the store is
writable) is checked before the first PATCH.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from effopt.prices import RateTable
from effopt.rightsizing.apply.guardrails import GuardrailSettings
from effopt.rightsizing.apply.model import SUPPORTED_KINDS, ResourceChange, Resources, WorkloadRef
from effopt.rightsizing.apply.plan import Plan, PlanItem, build_plan, validate_changes
from effopt.store import EffoptStore, RightsizingAuditRecord, StoreUnavailable

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
_PLURAL = {"Deployment": "deployments", "StatefulSet": "statefulsets"}


class ApplyError(RuntimeError):
    """Applying a plan failed; the message names the workload."""


def container_patch(items: Iterable[PlanItem], resource_version: str | None = None) -> dict[str, Any]:
    """The strategic merge patch setting the planned resources of one workload's containers."""
    containers = [{"name": i.change.container, "resources": i.planned.to_k8s()} for i in items]
    patch: dict[str, Any] = {"spec": {"template": {"spec": {"containers": containers}}}}
    if resource_version is not None:
        patch["metadata"] = {"resourceVersion": resource_version}
    return patch


def workload_path(ref: WorkloadRef) -> str:
    return f"/apis/apps/v1/namespaces/{ref.namespace}/{_PLURAL[ref.kind]}/{ref.name}"


@dataclass
class ApplyResult:
    applied: list[PlanItem] = field(default_factory=list)
    conflicts_retried: int = 0
    audit_records: list[RightsizingAuditRecord] = field(default_factory=list)


def _json(response: Any) -> dict[str, Any]:
    return json.loads(response.data)


class KubernetesApplier:
    """Plans against the live cluster and applies plans by patching it."""

    def __init__(self, api_client: ApiClient, store: EffoptStore, *, max_conflict_retries: int = 5,
                 conflict_backoff_s: float = 0.2) -> None:
        self.api_client = api_client
        self.store = store
        self.max_conflict_retries = max_conflict_retries
        self.conflict_backoff_s = conflict_backoff_s

    # -- reading ---------------------------------------------------------------
    def _apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api_client)

    def read_workload(self, ref: WorkloadRef) -> dict[str, Any]:
        """The workload as a dict; ApplyError when it is missing or the kind is unsupported."""
        from kubernetes.client.exceptions import ApiException

        if ref.kind not in SUPPORTED_KINDS:
            raise ApplyError(f"{ref}: kind {ref.kind!r} cannot be patched (supported: {', '.join(SUPPORTED_KINDS)})")
        apps = self._apps()
        read = apps.read_namespaced_deployment if ref.kind == "Deployment" else apps.read_namespaced_stateful_set
        try:
            return _json(read(ref.name, ref.namespace, _preload_content=False))
        except ApiException as exc:
            raise ApplyError(f"{ref}: cannot be read ({exc.status} {exc.reason})") from None

    def hpa_resources(self, namespaces: Iterable[str]) -> dict[WorkloadRef, frozenset[str]]:
        """Per workload, the resources (cpu, memory) an autoscaling/v2 HPA scales it on."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        api = client.AutoscalingV2Api(self.api_client)
        out: dict[WorkloadRef, frozenset[str]] = {}
        for ns in sorted(set(namespaces)):
            try:
                hpas = _json(api.list_namespaced_horizontal_pod_autoscaler(ns, _preload_content=False))
            except ApiException as exc:
                raise ApplyError(f"HorizontalPodAutoscalers of namespace {ns} cannot be listed "
                                 f"({exc.status} {exc.reason})") from None
            for hpa in hpas.get("items", []):
                spec = hpa.get("spec", {})
                target = spec.get("scaleTargetRef", {})
                resources = set()
                for metric in spec.get("metrics") or []:
                    for key in ("resource", "containerResource"):
                        name = (metric.get(key) or {}).get("name")
                        if metric.get("type", "").lower() == key.lower() and name:
                            resources.add(name)
                ref = WorkloadRef(target.get("kind", ""), ns, target.get("name", ""))
                out[ref] = out.get(ref, frozenset()) | frozenset(resources)
        return out

    @staticmethod
    def _container(obj: dict[str, Any], ref: WorkloadRef, name: str) -> dict[str, Any]:
        for c in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            if c.get("name") == name:
                return c
        raise ApplyError(f"{ref}: has no container {name!r}")

    def current_changes(self, changes: Iterable[ResourceChange]) -> list[ResourceChange]:
        """``changes`` with ``current`` and ``replicas`` replaced by the cluster's live values."""
        from dataclasses import replace

        out = []
        cache: dict[WorkloadRef, dict[str, Any]] = {}
        for change in validate_changes(changes):
            ref = change.workload
            if ref not in cache:
                cache[ref] = self.read_workload(ref)
            obj = cache[ref]
            live = Resources.from_k8s(self._container(obj, ref, change.container).get("resources"),
                                      change.label, gpu_model=change.current.gpu_model)
            replicas = obj.get("spec", {}).get("replicas", 1)
            out.append(replace(change, current=live, replicas=int(replicas)))
        return out

    # -- planning --------------------------------------------------------------
    def plan(self, changes: Iterable[ResourceChange], rates: RateTable, guardrails: GuardrailSettings | None = None,
             *, now: float | None = None, pricing: str = "on_demand") -> Plan:
        """A dry-run plan against the live cluster: live current values, HPAs, cooldown from the audit records."""
        live = self.current_changes(changes)
        hpas = self.hpa_resources(c.workload.namespace for c in live)
        return build_plan(live, rates, guardrails, now=time.time() if now is None else now,
                          last_applied=lambda w: self.store.last_rightsizing_apply(w.kind, w.namespace, w.name),
                          hpa_resources=hpas, pricing=pricing)

    # -- applying --------------------------------------------------------------
    def _check_basis(self, obj: dict[str, Any], ref: WorkloadRef, items: list[PlanItem]) -> None:
        for item in items:
            live = Resources.from_k8s(self._container(obj, ref, item.change.container).get("resources"),
                                      item.change.label, gpu_model=item.change.current.gpu_model)
            if live != item.change.current:
                raise ApplyError(f"{item.change.label}: resources changed since the plan was made "
                                 f"(plan: {item.change.current.to_k8s()}, now: {live.to_k8s()}); plan again")

    def _patch(self, ref: WorkloadRef, body: dict[str, Any]) -> dict[str, Any]:
        apps = self._apps()
        patch = apps.patch_namespaced_deployment if ref.kind == "Deployment" else apps.patch_namespaced_stateful_set
        return _json(patch(ref.name, ref.namespace, body, _content_type=STRATEGIC_MERGE, _preload_content=False))

    def _patch_with_retry(self, ref: WorkloadRef, items: list[PlanItem], obj: dict[str, Any],
                          result: ApplyResult) -> dict[str, Any]:
        """PATCH with the read ``resourceVersion``; on 409 re-read, re-check the basis and patch again."""
        from kubernetes.client.exceptions import ApiException

        for attempt in range(self.max_conflict_retries + 1):
            version = obj.get("metadata", {}).get("resourceVersion")
            try:
                return self._patch(ref, container_patch(items, version))
            except ApiException as exc:
                if exc.status != 409 or attempt == self.max_conflict_retries:
                    raise ApplyError(f"{ref}: PATCH failed ({exc.status} {exc.reason}) after {attempt} "
                                     f"conflict retr{'y' if attempt == 1 else 'ies'}") from None
            result.conflicts_retried += 1
            log.info("%s: 409 Conflict, re-reading and re-applying (retry %d)", ref, attempt + 1)
            time.sleep(self.conflict_backoff_s * (attempt + 1))
            obj = self.read_workload(ref)
            self._check_basis(obj, ref, items)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def apply(self, plan: Plan, *, now: float | None = None) -> ApplyResult:
        """Patch every ``apply`` item of ``plan`` (one PATCH per workload) and audit it.

        The whole plan is checked first (every workload readable, its
        containers' resources still those the plan was made from, the store
        writable); a failed check stops the apply before anything is patched.
        A failure later (a PATCH refused, conflicts past the retry budget)
        names the workload and how many changes were applied before it.
        """
        groups = plan.by_workload()
        objects: dict[WorkloadRef, dict[str, Any]] = {}
        for ref, items in groups.items():
            objects[ref] = self.read_workload(ref)
            self._check_basis(objects[ref], ref, items)
        self.store.ensure_schema()
        result = ApplyResult()
        for ref, items in groups.items():
            done = f"{len(result.applied)} container change(s) were applied before it (see the audit records)"
            try:
                patched = self._patch_with_retry(ref, items, objects[ref], result)
            except ApplyError as exc:
                raise ApplyError(f"{exc}; {done}") from None
            applied_at = time.time() if now is None else now
            records = [
                RightsizingAuditRecord(
                    applied_at=applied_at, mode="patch", kind=ref.kind, namespace=ref.namespace, name=ref.name,
                    container=i.change.container, before=i.change.current.to_k8s(), after=i.after.to_k8s(),
                    reason="; ".join((i.change.reason, *i.decisions)), monthly_cost_delta=i.monthly_cost_delta,
                    resource_version=patched.get("metadata", {}).get("resourceVersion"),
                )
                for i in items
            ]
            try:
                self.store.record_rightsizing_audit(records)
            except StoreUnavailable as exc:
                raise ApplyError(f"{ref}: patched, but its audit record could not be written ({exc}); "
                                 f"{done}") from exc
            result.audit_records += records
            result.applied += items
            log.info("%s: patched %d container(s)", ref, len(items))
        return result

