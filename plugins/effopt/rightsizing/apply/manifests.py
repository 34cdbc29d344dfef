"""Apply modes (b) VPA objects and (c) GitOps kustomize patches, written as YAML files.

Both take a :class:`~effopt.rightsizing.apply.plan.Plan`; only its ``apply``
items produce output, so guardrails hold in every mode.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from effopt.rightsizing.apply.kubernetes import container_patch
from effopt.rightsizing.apply.model import SUPPORTED_KINDS, ChangeError, WorkloadRef, format_cpu, format_memory
from effopt.rightsizing.apply.plan import Plan

VPA_API_VERSION = "autoscaling.k8s.io/v1"
VPA_MODES = ("Off", "Initial", "Recreate", "Auto")
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")


def _check_kind(ref: WorkloadRef) -> None:
    if ref.kind not in SUPPORTED_KINDS:
        raise ChangeError(f"{ref}: kind {ref.kind!r} has no manifest (supported: {', '.join(SUPPORTED_KINDS)})")


def vpa_manifests(plan: Plan, update_mode: str = "Off") -> list[dict[str, Any]]:
    """One VerticalPodAutoscaler per workload of the plan's ``apply`` items.

    ``update_mode`` "Off" is recommendation-only (the VPA recommender computes,
    nothing is evicted); "Auto" lets VPA apply its own recommendations, with
    each container's allowed range pinned to [min, max] of the current and
    planned values, so VPA cannot move further than effopt's guardrails did.
    """
    if update_mode not in VPA_MODES:
        raise ChangeError(f"VPA updateMode {update_mode!r} is not one of {', '.join(VPA_MODES)}")
    out = []
    for ref, items in plan.by_workload().items():
        _check_kind(ref)
        policies = []
        for item in items:
            before, planned = item.change.current, item.planned
            lo: dict[str, str] = {}
            hi: dict[str, str] = {}
            # VPA recommends requests; a resource whose request the plan leaves alone is not controlled
            for res, b, a in (("cpu", before.cpu_request, planned.cpu_request),
                              ("memory", before.memory_request, planned.memory_request)):
                if a is None:
                    continue
                values = [v for v in (b, a) if v is not None]
                fmt = format_cpu if res == "cpu" else format_memory
                lo[res], hi[res] = fmt(min(values)), fmt(max(values))
            if lo:
                policies.append({"containerName": item.change.container, "controlledResources": sorted(lo),
                                 "minAllowed": lo, "maxAllowed": hi})
            else:
                policies.append({"containerName": item.change.container, "mode": "Off"})
        out.append({
            "apiVersion": VPA_API_VERSION,
            "kind": "VerticalPodAutoscaler",
            "metadata": {"name": f"{ref.name}-effopt", "namespace": ref.namespace,
                         "labels": {"app.kubernetes.io/managed-by": "effopt"},
                         "annotations": {"effopt.io/reason": "; ".join(i.change.reason for i in items)}},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": ref.kind, "name": ref.name},
                "updatePolicy": {"updateMode": update_mode},
                "resourcePolicy": {"containerPolicies": policies},
            },
        })
    return out


def write_vpa(plan: Plan, out_dir: str | Path, update_mode: str = "Off") -> list[Path]:
    """Write one ``vpa-<namespace>-<name>.yaml`` per workload; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for manifest in vpa_manifests(plan, update_mode):
        md = manifest["metadata"]
        path = out / f"vpa-{_slug(md['namespace'])}-{_slug(md['name'])}.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
        paths.append(path)
    return paths


def _slug(s: str) -> str:
    return _DNS_LABEL.sub("-", s.lower()).strip("-")


def kustomize_patches(plan: Plan) -> dict[str, dict[str, Any]]:
    """File name -> strategic merge patch (with apiVersion/kind/metadata so kustomize can target it)."""
    out: dict[str, dict[str, Any]] = {}
    for ref, items in plan.by_workload().items():
        _check_kind(ref)
        patch = container_patch(items)
        patch = {"apiVersion": "apps/v1", "kind": ref.kind,
                 "metadata": {"name": ref.name, "namespace": ref.namespace}, **patch}
        out[f"effopt-{_slug(ref.kind)}-{_slug(ref.namespace)}-{_slug(ref.name)}.yaml"] = patch
    return out


def write_kustomize(plan: Plan, out_dir: str | Path, resources: Sequence[str] = ()) -> list[Path]:
    """Write the patch files and a ``kustomization.yaml`` listing them under ``patches``.

    ``resources`` are the base manifests or directories (relative to
    ``out_dir``) the patches apply to, as kustomize expects; an existing
    kustomization.yaml is replaced.  Returns the written paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    patches = kustomize_patches(plan)
    paths = []
    for name, patch in patches.items():
        path = out / name
        path.write_text(yaml.safe_dump(patch, sort_keys=False), encoding="utf-8")
        paths.append(path)
    kustomization: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    if resources:
        kustomization["resources"] = list(resources)
    kustomization["patches"] = [{"path": name} for name in patches]
    path = out / "kustomization.yaml"
    path.write_text(yaml.safe_dump(kustomization, sort_keys=False), encoding="utf-8")
    return [*paths, path]


def dump_all(manifests: Iterable[dict[str, Any]]) -> str:
    """Several manifests as one multi-document YAML string."""
    return yaml.safe_dump_all(list(manifests), sort_keys=False)
