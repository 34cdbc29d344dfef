"""Typed waste findings: what was found, where, how sure, what it costs, what to do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["over_provisioned", "idle", "idle_gpu", "scaling_churn", "memory_leak", "cache_inefficiency",
               "cost_anomaly", "could_run_on_spot"]
KINDS: tuple[Kind, ...] = ("over_provisioned", "idle", "idle_gpu", "scaling_churn", "memory_leak",
                           "cache_inefficiency", "cost_anomaly", "could_run_on_spot")
Severity = Literal["critical", "warning", "info"]
SEVERITY_RANK: dict[str, int] = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Advice:
    """A concrete recommendation: an action, and the values to set where one applies.

    ``values`` holds recommended settings (e.g. ``{"request": 0.42}`` in the
    finding's unit, ``{"replicas": 0}``); ``source`` names what produced them
    (``"krr recommender"``, ``"detector"``).
    """

    action: str
    values: dict[str, Any] = field(default_factory=dict)
    source: str = "detector"

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "values": dict(self.values), "source": self.source}


@dataclass(frozen=True)
class Finding:
    """One piece of waste in one resource of one container.

    ``monthly_waste`` is USD per month (``hours_per_month`` of the rate table),
    or ``None`` when a price was missing: ``missing`` then names it (never a
    guessed zero).  ``evidence`` holds the numbers the finding rests on, in
    the units named by their keys.
    """

    kind: Kind
    workload: str
    container: str
    resource: str
    severity: Severity
    evidence: dict[str, Any]
    advice: Advice
    monthly_waste: float | None
    missing: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind, self.workload, self.container, self.resource)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "workload": self.workload, "container": self.container,
                "resource": self.resource, "severity": self.severity,
                "monthly_waste": None if self.monthly_waste is None else round(self.monthly_waste, 4),
                "missing_prices": list(self.missing), "evidence": dict(self.evidence),
                "recommendation": self.advice.as_dict(), "labels": dict(self.labels)}
