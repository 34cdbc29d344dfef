"""The right-sizing use case, shared by the Airflow operator and the command line: usage -> plan.

``plan_rightsizing`` reads the CPU and memory series of a metrics source,
recommends each one, groups them into one change per container and plans
the changes against the guardrails and the rate table.  Nothing here knows
where the source, the prices or the audit records come from: the caller
passes them in.  Plain Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from effopt.metrics.series import MetricsSource, UsageSeries
from effopt.prices import RateTable
from effopt.rightsizing.apply import Plan, ResourceChange, Resources, WorkloadRef, build_plan
from effopt.rightsizing.base import Recommendation
from effopt.rightsizing.recommend import Skipped, change_to_dict, recommend_all, to_changes, workload_ref

RESOURCES = ("cpu", "memory")


@dataclass
class RightsizingResult:
    """What one right-sizing run found and planned."""

    plan: Plan
    changes: list[ResourceChange]
    recommendations: list[Recommendation]
    skipped: list[Skipped]
    series: int
    issues: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One sentence for the log and the page: how many changes, and why there are none."""
        applies = sum(1 for item in self.plan.items if item.action == "apply")
        if not self.series and not self.changes:
            return "no usage series found: nothing to size yet"
        if not self.recommendations and self.changes:
            return (f"{len(self.changes)} OOM-killed container(s) re-planned, "
                    f"{sum(1 for i in self.plan.items if i.action == 'apply')} change(s) planned")
        if not self.recommendations:
            return (f"not enough samples yet: none of the {self.series} series has enough usable history to be "
                    "sized (each series' reason is under 'skipped')")
        return (f"{len(self.changes)} container(s) sized from {self.series} series, {applies} change(s) planned, "
                f"{len(self.skipped)} series skipped for too little data")

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "plan": self.plan.to_dict(),
            "changes": [change_to_dict(c) for c in self.changes],
            "recommendations": [r.as_dict() for r in self.recommendations],
            "skipped": [s.as_dict() for s in self.skipped],
            "issues": list(self.issues),
        }


def read_series(source: MetricsSource, resources: Sequence[str] = RESOURCES) -> list[UsageSeries]:
    """The source's series of ``resources`` (those it offers)."""
    offered = source.resources()
    return [s for r in resources if r in offered for s in source.series(r)]  # type: ignore[arg-type]


def plan_rightsizing(
    source: MetricsSource,
    rates: RateTable,
    *,
    now: float,
    kind: str = "Deployment",
    recommender: str = "effopt",
    settings: Mapping[str, Any] | None = None,
    kinds_for: Callable[[list[str]], Mapping[str, str]] | None = None,
    last_applied: Callable[[WorkloadRef], float | None] | None = None,
    pricing: str = "on_demand",
) -> RightsizingResult:
    """Recommend every CPU and memory series of ``source`` and plan the changes (nothing is applied).

    ``kind`` is the kind of the workloads the series describe; ``kinds_for(namespaces)`` may name the kind of
    each workload instead (read from the cluster).  ``last_applied`` feeds the cooldown.
    """
    series = read_series(source)
    recs, skipped = recommend_all(series, recommender, settings)
    kinds = None
    if kinds_for is not None:
        namespaces = sorted({s.workload.rpartition("/")[0] or "default" for s in series})
        kinds = kinds_for(namespaces) if namespaces else None
    changes = to_changes(recs, series, kind=kind, kinds=kinds)
    plan = build_plan(changes, rates, now=now, last_applied=last_applied, pricing=pricing)
    issues = list(source.issues()) + [f"{s.workload}/{s.container} {s.resource}: {'; '.join(s.quality.issues)}"
                                      for s in series if s.quality.issues]
    return RightsizingResult(plan, changes, recs, skipped, len(series), issues)


def replan_after_oom(
    kills: Sequence[Mapping[str, Any]],
    source: MetricsSource,
    rates: RateTable,
    *,
    now: float,
    kind: str = "Deployment",
    kinds_for: Callable[[list[str]], Mapping[str, str]] | None = None,
    last_applied: Callable[[WorkloadRef], float | None] | None = None,
    pricing: str = "on_demand",
) -> RightsizingResult:
    """The memory of every OOM-killed container, re-planned at once with VPA's bump-up rule
    (:func:`~effopt.rightsizing.oom.plan_after_oom`) and the usual guardrails and prices.

    ``kills`` are :func:`effopt.metrics.prometheus.oom_kills_since` results; ``source`` gives the containers'
    memory series (peak usage, request and limit).  A killed container the source has no series for is
    listed under ``skipped`` with the reason.
    """
    from effopt.rightsizing.oom import plan_after_oom

    wanted = {(k["namespace"], k["workload"], k["container"]) for k in kills}
    series = {(s.labels.get("namespace", ""), s.labels.get("workload", s.workload), s.container): s
              for s in source.series("memory")}
    changes, skipped = [], []
    for namespace, workload, container in sorted(wanted):
        name = f"{namespace}/{workload}" if namespace else workload
        s = series.get((namespace, workload, container))
        if s is None or not len(s):
            skipped.append(Skipped(name, container, "memory", "OOM-killed, but no memory series in the window"))
            continue
        peak = float(np.max(s.values))
        replan = plan_after_oom(peak, request_bytes=s.request, limit_bytes=s.limit)
        ref = workload_ref(name, kind)
        changes.append(ResourceChange(workload=ref, container=container,
                                      current=Resources(memory_request=s.request, memory_limit=s.limit),
                                      recommended=Resources(memory_request=replan.limit_bytes,
                                                            memory_limit=replan.limit_bytes),
                                      reason=replan.reason, memory_peak_bytes=peak))
    if kinds_for is not None and changes:
        found = kinds_for(sorted({c.workload.namespace for c in changes}))
        changes = [replace(c, workload=WorkloadRef(found.get(f"{c.workload.namespace}/{c.workload.name}", kind),
                                                   c.workload.namespace, c.workload.name)) for c in changes]
    plan = build_plan(changes, rates, now=now, last_applied=last_applied, pricing=pricing)
    return RightsizingResult(plan, changes, [], skipped, len(series), list(source.issues()))
