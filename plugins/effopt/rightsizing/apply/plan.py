"""The plan: per workload and container, current -> planned resources, why, and the monthly cost delta.

Building a plan changes nothing (dry-run is the default of every mode); the
apply modes take a plan and act only on its ``apply`` items.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from effopt.prices import MonthlyCost, RateTable
from effopt.rightsizing.apply.guardrails import GuardrailSettings, evaluate
from effopt.rightsizing.apply.model import ChangeError, ResourceChange, Resources, WorkloadRef

APPLY, SKIP, UNCHANGED = "apply", "skip", "unchanged"


@dataclass(frozen=True)
class PlanItem:
    change: ResourceChange
    action: str  # apply | skip | unchanged
    planned: Resources  # fields to set (None = unchanged)
    decisions: tuple[str, ...]
    cost_current: MonthlyCost
    cost_planned: MonthlyCost

    @property
    def after(self) -> Resources:
        """The container's resources once the plan is applied."""
        return self.change.current.merged(self.planned)

    @property
    def monthly_cost_delta(self) -> float | None:
        """USD per month (negative = saving), None when a price is missing."""
        if self.cost_current.usd is None or self.cost_planned.usd is None:
            return None
        return self.cost_planned.usd - self.cost_current.usd

    @property
    def missing_prices(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.cost_current.missing + self.cost_planned.missing))

    def to_dict(self) -> dict[str, Any]:
        w = self.change.workload
        return {
            "workload": {"kind": w.kind, "namespace": w.namespace, "name": w.name},
            "container": self.change.container,
            "action": self.action,
            "current": self.change.current.to_k8s(),
            "recommended": self.change.current.merged(self.change.recommended).to_k8s(),
            "planned": self.after.to_k8s(),
            "reason": self.change.reason,
            "guardrails": list(self.decisions),
            "replicas": self.change.replicas,
            "monthly_cost_current": self.cost_current.usd,
            "monthly_cost_planned": self.cost_planned.usd,
            "monthly_cost_delta": self.monthly_cost_delta,
            "missing_prices": list(self.missing_prices),
        }


@dataclass(frozen=True)
class Plan:
    items: tuple[PlanItem, ...]
    created_at: float
    pricing: str
    rate_table: str

    def to_apply(self) -> list[PlanItem]:
        return [i for i in self.items if i.action == APPLY]

    def by_workload(self) -> dict[WorkloadRef, list[PlanItem]]:
        out: dict[WorkloadRef, list[PlanItem]] = {}
        for item in self.to_apply():
            out.setdefault(item.change.workload, []).append(item)
        return out

    def monthly_cost_delta(self) -> float | None:
        """Sum over the ``apply`` items; None when any of them lacks a price."""
        deltas = [i.monthly_cost_delta for i in self.to_apply()]
        return None if any(d is None for d in deltas) else sum(d for d in deltas if d is not None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "created_at": self.created_at,
            "pricing": self.pricing,
            "rate_table": self.rate_table,
            "monthly_cost_delta": self.monthly_cost_delta(),
            "missing_prices": sorted({m for i in self.items for m in i.missing_prices}),
            "items": [i.to_dict() for i in self.items],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _cost(rates: RateTable, res: Resources, replicas: int, pricing: str) -> MonthlyCost:
    gpus = {res.gpu_model: int(res.gpu)} if res.gpu else {}
    cost = rates.monthly_cost(res.billed_cpu(), res.billed_memory(), gpus, pricing=pricing)
    if cost.usd is None:
        return cost
    return MonthlyCost(cost.usd * replicas, (), {k: v * replicas for k, v in cost.breakdown.items()})


def validate_changes(changes: Iterable[ResourceChange]) -> list[ResourceChange]:
    """Validate every change (all problems reported together) and reject duplicates."""
    changes = list(changes)
    errors: list[str] = []
    seen: set[tuple[WorkloadRef, str]] = set()
    for change in changes:
        try:
            change.validate()
        except ChangeError as exc:
            errors.append(str(exc))
        key = (change.workload, change.container)
        if key in seen:
            errors.append(f"{change.label}: listed twice")
        seen.add(key)
    if errors:
        raise ChangeError("invalid changes, nothing planned:\n" + "\n".join(errors))
    return changes


def build_plan(
    changes: Iterable[ResourceChange],
    rates: RateTable,
    guardrails: GuardrailSettings | None = None,
    *,
    now: float,
    last_applied: Callable[[WorkloadRef], float | None] | None = None,
    hpa_resources: Mapping[WorkloadRef, frozenset[str]] | None = None,
    pricing: str = "on_demand",
) -> Plan:
    """Plan ``changes``: guardrails, then the monthly cost of current and planned resources.

    ``last_applied`` gives the last apply time of a workload (from the audit
    records) for the cooldown; ``hpa_resources`` the resources an HPA scales
    each workload on.
    """
    settings = guardrails or GuardrailSettings()
    items: list[PlanItem] = []
    last_cache: dict[WorkloadRef, float | None] = {}
    for change in validate_changes(changes):
        w = change.workload
        if w not in last_cache:
            last_cache[w] = last_applied(w) if last_applied else None
        outcome = evaluate(change, settings, now=now, last_applied_at=last_cache[w],
                           hpa_resources=(hpa_resources or {}).get(w, frozenset()))
        if outcome.blocked:
            action = SKIP
        elif any(v is not None for v in outcome.planned.as_dict().values()):
            action = APPLY
        else:
            action = UNCHANGED
        after = change.current.merged(outcome.planned)
        items.append(PlanItem(change, action, outcome.planned, outcome.decisions,
                              _cost(rates, change.current, change.replicas, pricing),
                              _cost(rates, after, change.replicas, pricing)))
    return Plan(tuple(items), now, pricing, rates.describe())
