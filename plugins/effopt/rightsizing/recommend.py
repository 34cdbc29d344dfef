"""From usage series to a right-sizing plan: recommend CPU and memory per container, then plan the changes.

Plain Python.  The recommender gives each resource a target; here the
targets become :class:`~effopt.rightsizing.apply.ResourceChange` values
(CPU request = target, CPU limit left as it is; memory request = limit =
target, as in the backtest), which :func:`~effopt.rightsizing.apply.build_plan`
checks against the guardrails and prices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from effopt.metrics.series import UsageSeries
from effopt.rightsizing.apply import ResourceChange, Resources, WorkloadRef
from effopt.rightsizing.apply.model import AIRFLOW_TASK_KIND
from effopt.rightsizing.base import NotEnoughData, Recommendation, get_recommender


@dataclass(frozen=True)
class Skipped:
    workload: str
    container: str
    resource: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"workload": self.workload, "container": self.container, "resource": self.resource,
                "reason": self.reason}


def recommend_all(
    series: Iterable[UsageSeries], recommender: str = "effopt", settings: Mapping[str, Any] | None = None
) -> tuple[list[Recommendation], list[Skipped]]:
    """One recommendation per series; series without enough usable data are listed with the reason.

    ``settings`` (name -> value, strings or numbers) override the recommender's defaults, validated
    (:func:`~effopt.rightsizing.settings.parse_settings`).  The recommender is first calibrated on all of
    ``series`` (all history up to now, as the backtest does at each decision time) and the prior it returns
    (effopt's fleet prior; None for VPA and KRR) is passed to every recommendation.
    """
    strategy = get_recommender(recommender, settings)
    series = list(series)
    prior = strategy.calibrate(series)
    out: list[Recommendation] = []
    skipped: list[Skipped] = []
    for s in series:
        try:
            out.append(strategy.recommend(s) if prior is None else strategy.recommend(s, None, prior))
        except NotEnoughData as exc:
            skipped.append(Skipped(s.workload, s.container, s.resource, str(exc)))
    return out, skipped


def workload_ref(workload: str, kind: str) -> WorkloadRef:
    """``namespace/name`` (Kubernetes) or ``dag_id/task_id`` (Airflow tasks) as a reference."""
    namespace, _, name = workload.rpartition("/")
    if not name:
        raise ValueError(f"workload {workload!r} has no name")
    return WorkloadRef(kind, namespace or "default", name)


def to_changes(
    recommendations: Sequence[Recommendation],
    series: Sequence[UsageSeries],
    *,
    kind: str = "Deployment",
    kinds: Mapping[str, str] | None = None,
) -> list[ResourceChange]:
    """Group per-resource recommendations into one change per container.

    ``kinds`` gives the kind of each workload by name (from
    :class:`effopt.metrics.kubernetes.KubernetesSource`); others are ``kind``.
    """
    by_key = {(s.workload, s.container, s.resource): s for s in series}
    grouped: dict[tuple[str, str], dict[str, Recommendation]] = {}
    for r in recommendations:
        grouped.setdefault((r.workload, r.container), {})[r.resource] = r
    changes = []
    for (workload, container), recs in sorted(grouped.items()):
        cpu, mem = recs.get("cpu"), recs.get("memory")
        cpu_s, mem_s = by_key.get((workload, container, "cpu")), by_key.get((workload, container, "memory"))
        current = Resources(
            cpu_request=cpu_s.request if cpu_s else None,
            cpu_limit=cpu_s.limit if cpu_s else None,
            memory_request=mem_s.request if mem_s else None,
            memory_limit=mem_s.limit if mem_s else None,
        )
        recommended = Resources(
            cpu_request=cpu.target if cpu else None,
            memory_request=mem.target if mem else None,
            memory_limit=mem.target if mem else None,
        )
        peak = float(np.max(mem_s.values)) if mem_s is not None and len(mem_s) else None
        reason = "; ".join(_why(r) for r in (cpu, mem) if r is not None)
        changes.append(
            ResourceChange(
                workload=workload_ref(workload, (kinds or {}).get(workload, kind)),
                # A KubernetesPodOperator's container is called "base".
                container="base" if kind == AIRFLOW_TASK_KIND else container,
                current=current,
                recommended=recommended,
                reason=reason,
                memory_peak_bytes=peak,
            )
        )
    return changes


def _why(r: Recommendation) -> str:
    e = r.evidence
    pct = "" if e.percentile is None else f"p{e.percentile:g} "
    return (f"{r.resource} {r.recommender}: {pct}{e.method} over {e.samples} samples, "
            f"confidence {r.confidence:.2f}")


def change_to_dict(change: ResourceChange) -> dict[str, Any]:
    """A JSON-able form of ``change`` (for XCom); :func:`change_from_dict` reverses it."""
    w = change.workload
    return {
        "workload": {"kind": w.kind, "namespace": w.namespace, "name": w.name},
        "container": change.container,
        "current": change.current.as_dict(),
        "recommended": change.recommended.as_dict(),
        "reason": change.reason,
        "memory_peak_bytes": change.memory_peak_bytes,
        "replicas": change.replicas,
    }


def change_from_dict(data: dict[str, Any]) -> ResourceChange:
    try:
        return ResourceChange(
            workload=WorkloadRef(**data["workload"]),
            container=data["container"],
            current=Resources(**data["current"]),
            recommended=Resources(**data["recommended"]),
            reason=data.get("reason", ""),
            memory_peak_bytes=data.get("memory_peak_bytes"),
            replicas=data.get("replicas", 1),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a right-sizing change: {exc} in {data!r:.300}") from exc
