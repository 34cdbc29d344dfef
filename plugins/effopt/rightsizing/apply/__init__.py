"""Plan and apply right-sizing recommendations.

Dry-run is the default: :func:`build_plan` (or :meth:`KubernetesApplier.plan`
against a live cluster) only produces a :class:`Plan`.  Apply modes take a plan:

* (a) :meth:`KubernetesApplier.apply`: strategic merge patches through ``KubernetesHook``;
* (b) :func:`vpa_manifests` / :func:`write_vpa`: VerticalPodAutoscaler YAML;
* (c) :func:`write_kustomize`: kustomize patch files and kustomization.yaml;
* (d) :func:`record_task_resources` / :func:`write_task_resources`, which the
  cluster policy :func:`effopt.policies.effopt_task_policy` applies at parse time.
"""

from effopt.rightsizing.apply.guardrails import GuardrailSettings
from effopt.rightsizing.apply.kubernetes import ApplyError, ApplyResult, KubernetesApplier, container_patch
from effopt.rightsizing.apply.manifests import vpa_manifests, write_kustomize, write_vpa
from effopt.rightsizing.apply.model import ChangeError, ResourceChange, Resources, WorkloadRef
from effopt.rightsizing.apply.plan import Plan, PlanItem, build_plan
from effopt.rightsizing.apply.tasks import latest_task_resources, record_task_resources, write_task_resources

__all__ = [
    "ApplyError", "ApplyResult", "ChangeError", "GuardrailSettings", "KubernetesApplier", "Plan", "PlanItem",
    "ResourceChange", "Resources", "WorkloadRef", "build_plan", "container_patch", "latest_task_resources",
    "record_task_resources", "vpa_manifests", "write_kustomize", "write_task_resources", "write_vpa",
]
