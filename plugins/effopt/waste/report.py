"""Run every detector over a set of workloads, price them, and summarise as a :class:`WasteReport`.

Totals follow the OpenCost model (:mod:`effopt.waste.cost`), so they never
count the same dollar twice; ``by_kind`` sums the findings' own
``monthly_waste`` (a right-sizing saving, an idle GPU, ...), and findings of
different kinds may overlap (an idle container is also over-provisioned).
Unpriced resources and findings are listed with the missing price, never
counted as zero.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from effopt.metrics.series import UsageSeries
from effopt.prices import PRICING_MODELS, RateTable
from effopt.rightsizing.base import recommender_names
from effopt.rightsizing.settings import RecommenderSettings, SettingError, setting
from effopt.units import HOURS_PER_MONTH, format_duration
from effopt.waste import detectors
from effopt.waste.cost import ResourceCost, resource_cost
from effopt.waste.model import KINDS, SEVERITY_RANK, Finding

LABEL_KEYS = ("team", "namespace")
CSV_FIELDS = ("kind", "workload", "container", "resource", "severity", "monthly_waste", "missing_prices",
              "recommendation", "recommended_values", "evidence")


@dataclass(frozen=True)
class WorkloadUsage:
    """Everything known about one container of one workload (each series optional)."""

    workload: str
    container: str
    cpu: UsageSeries | None = None
    memory: UsageSeries | None = None
    gpu_util: UsageSeries | None = None
    gpu_memory: UsageSeries | None = None
    replicas: detectors.ReplicaSeries | None = None
    gpu_model: str | None = None
    gpu_count: float = 1.0
    replica_hourly_usd: float | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WasteSettings(RecommenderSettings):
    """Choices shared by all workloads of a report.

    Every field declares its bounds and a description (as the recommenders'
    settings do: :func:`effopt.rightsizing.settings.describe` lists them,
    :func:`~effopt.rightsizing.settings.parse_settings` reads them from
    strings); an invalid value raises :class:`SettingError` naming the field.
    The detectors' own thresholds are keyword arguments of
    :mod:`effopt.waste.detectors`, not settings of a report.
    """

    recommender: str = setting("krr", "right-sizing recommender of the recommended values (a name in the "
                                      "recommender registry)")
    pricing: str = setting("on_demand", "pricing model the costs and findings are priced at (on_demand or spot)")
    top: int = setting(10, "number of top wasters the report lists", ge=0)
    cache_period_s: float | None = setting(None, "seconds the cache summary covers, to price the cache findings "
                                                 "(none: they are left unpriced)", gt=0, lt=math.inf)
    cache_worker_cores: float | None = setting(None, "cores of the worker running the cached functions, to price "
                                                     "the cache findings (none: they are left unpriced)",
                                               gt=0, lt=math.inf)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, allowed in (("recommender", recommender_names()), ("pricing", PRICING_MODELS)):
            if getattr(self, name) not in allowed:
                raise SettingError(f"{type(self).__name__}.{name}: must be one of {', '.join(allowed)}, "
                                   f"got {getattr(self, name)!r}")


def group_series(series: Iterable[UsageSeries], *, gpu_model: str | None = None, gpu_count: float = 1.0
                 ) -> list[WorkloadUsage]:
    """One :class:`WorkloadUsage` per (workload, container) from series of any resource kinds."""
    grouped: dict[tuple[str, str], dict[str, Any]] = {}
    for s in series:
        slot = grouped.setdefault((s.workload, s.container), {"labels": {}})
        if s.resource in slot:
            raise ValueError(f"two {s.resource} series for {s.workload}/{s.container}")
        slot[s.resource] = s
        slot["labels"].update(s.labels)
    return [WorkloadUsage(w, c, gpu_model=gpu_model, gpu_count=gpu_count, **v) for (w, c), v in sorted(grouped.items())]


def _label(labels: Mapping[str, str], workload: str) -> str | None:
    for key in LABEL_KEYS:
        if labels.get(key):
            return f"{key}={labels[key]}"
    namespace, sep, _ = workload.rpartition("/")
    return f"namespace={namespace}" if sep and namespace else None


@dataclass(frozen=True)
class DataQuality:
    """What the report's figures rest on: samples read and used, and why the others were dropped."""

    series: int = 0
    series_unusable: int = 0
    samples_read: int = 0
    samples_used: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    #: Below this share of usable samples, the report says so at its top.
    MOSTLY_UNUSABLE = 0.5

    @classmethod
    def of(cls, workloads: Iterable[WorkloadUsage], notes: Iterable[str] = ()) -> DataQuality:
        series = [s for w in workloads for s in (w.cpu, w.memory, w.gpu_util, w.gpu_memory) if s is not None]
        dropped: dict[str, int] = {}
        for s in series:
            q = s.quality
            for reason, n in (("no usable value (NaN, unparsable or impossible timestamp)", q.nan),
                              ("negative value", q.negative), ("implausibly large value", q.huge),
                              ("duplicate timestamp", q.duplicates)):
                if n:
                    dropped[reason] = dropped.get(reason, 0) + int(n)
        return cls(len(series), sum(1 for s in series if not s.quality.usable),
                   sum(s.quality.samples_in for s in series), sum(s.quality.samples for s in series), dropped,
                   tuple(notes))

    @property
    def usable(self) -> bool:
        return self.samples_used > 0

    def headline(self) -> str | None:
        """A sentence for the top of the report when most of the input was unusable; None otherwise."""
        why = "; ".join(f"{n:,} {reason}" for reason, n in sorted(self.dropped.items(), key=lambda kv: -kv[1]))
        why = f" ({why})" if why else ""
        if not self.usable:
            return (f"No usable usage data: {self.series} series, {self.samples_read:,} samples read, none usable"
                    f"{why}. No cost or waste can be computed from it.")
        if self.samples_read and self.samples_used < self.MOSTLY_UNUSABLE * self.samples_read:
            return (f"Most of the input could not be used: {self.samples_read:,} samples read, "
                    f"{self.samples_read - self.samples_used:,} dropped{why}. The figures rest on the "
                    f"{self.samples_used:,} usable samples.")
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"series": self.series, "series_unusable": self.series_unusable, "samples_read": self.samples_read,
                "samples_used": self.samples_used, "dropped": dict(self.dropped), "notes": list(self.notes),
                "headline": self.headline()}


@dataclass
class WasteReport:
    """Costs, findings and totals of one analysis; ``to_json`` is the exchange format."""

    costs: list[ResourceCost]
    findings: list[Finding]
    workloads: int
    assumptions: list[str] = field(default_factory=list)
    rate_table: str = ""
    pricing: str = "on_demand"
    top: int = 10
    #: Seconds of usage the report rests on (first to last sample over all workloads); None without samples.
    observed_s: float | None = None
    hours_per_month: float = HOURS_PER_MONTH
    quality: DataQuality = field(default_factory=DataQuality)

    def window_text(self) -> str:
        """``23 h observed, scaled to a month (730 h)``: what the monthly figures are extrapolated from."""
        if self.observed_s is None:
            return "no usage observed"
        return f"{format_duration(self.observed_s)} observed, scaled to a month ({self.hours_per_month:g} h)"

    # -- totals ---------------------------------------------------------------------------------------------
    def totals(self) -> dict[str, Any]:
        priced = [c for c in self.costs if c.cost is not None]
        cost = sum(c.cost for c in priced if c.cost is not None)
        waste = sum(c.waste for c in priced if c.waste is not None)
        by_kind = {k: 0.0 for k in KINDS}
        unpriced_by_kind = {k: 0 for k in KINDS}
        for f in self.findings:
            if f.monthly_waste is None:
                unpriced_by_kind[f.kind] += 1
            else:
                by_kind[f.kind] += f.monthly_waste
        by_label: dict[str, dict[str, float]] = {}
        for c in priced:
            lab = _label(c.labels or {}, c.workload)
            if lab is not None:
                slot = by_label.setdefault(lab, {"cost": 0.0, "waste": 0.0})
                slot["cost"] += c.cost or 0.0
                slot["waste"] += c.waste or 0.0
        usable = self.quality.usable or not self.quality.series  # a report built without series keeps its sums
        return {
            "cost": round(cost, 4) if usable else None, "waste": round(waste, 4) if usable else None,
            "waste_pct": round(100.0 * waste / cost, 3) if usable and cost > 0 else None,
            "by_kind": {k: round(v, 4) for k, v in by_kind.items()},
            "unpriced_findings_by_kind": {k: v for k, v in unpriced_by_kind.items() if v},
            "by_label": {k: {"cost": round(v["cost"], 4), "waste": round(v["waste"], 4)}
                         for k, v in sorted(by_label.items())},
            "currency": "USD per month", "workloads": self.workloads, "findings": len(self.findings),
        }

    def missing_prices(self) -> list[dict[str, str]]:
        """Every resource or finding left unpriced, with the price it lacked."""
        out = [{"workload": c.workload, "container": c.container, "resource": c.resource, "missing": m}
               for c in self.costs for m in c.missing]
        out += [{"workload": f.workload, "container": f.container, "resource": f.resource, "kind": f.kind,
                 "missing": m} for f in self.findings for m in f.missing]
        return out

    def top_wasters(self, n: int | None = None) -> list[dict[str, Any]]:
        """Workloads by OpenCost waste (most first), with their findings' kinds.

        Only workloads with at least one finding are listed: a workload whose
        unused capacity no detector explains (below every threshold) has
        nothing to act on, though its idle cost is in the totals.
        """
        per: dict[str, dict[str, Any]] = {}
        for c in self.costs:
            slot = per.setdefault(c.workload, {"workload": c.workload, "cost": 0.0, "waste": 0.0, "kinds": set()})
            slot["cost"] += c.cost or 0.0
            slot["waste"] += c.waste or 0.0
        for f in self.findings:
            per.setdefault(f.workload, {"workload": f.workload, "cost": 0.0, "waste": 0.0, "kinds": set()})
            per[f.workload]["kinds"].add(f.kind)
        rows = sorted((r for r in per.values() if r["kinds"]),
                      key=lambda r: (-r["waste"], r["workload"]))[: n or self.top]
        return [{**r, "cost": round(r["cost"], 4), "waste": round(r["waste"], 4), "kinds": sorted(r["kinds"])}
                for r in rows]

    def sorted_findings(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (SEVERITY_RANK[f.severity],
                                                    -(f.monthly_waste if f.monthly_waste is not None else -1.0),
                                                    f.kind, f.workload, f.container))

    # -- trend ----------------------------------------------------------------------------------------------
    def trend(self, previous: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """Change against a previous report's ``to_json()`` (None without one)."""
        if previous is None:
            return None
        if "totals" not in previous or "findings" not in previous:
            raise ValueError("previous report lacks 'totals' or 'findings' (expected a WasteReport.to_json())")
        now, before = self.totals(), previous["totals"]

        def delta(a: float | None, b: float | None) -> dict[str, float | None]:
            change = None if a is None or b is None else round(a - b, 4)
            pct = None if change is None or not b else round(100.0 * change / b, 3)
            return {"now": a, "previous": b, "change": change, "change_pct": pct}

        keys_now = {"|".join(f.key) for f in self.findings}
        keys_before = {"|".join((f["kind"], f["workload"], f["container"], f["resource"]))
                       for f in previous["findings"]}
        return {
            "cost": delta(now["cost"], before.get("cost")),
            "waste": delta(now["waste"], before.get("waste")),
            "waste_pct": delta(now["waste_pct"], before.get("waste_pct")),
            "by_kind": {k: delta(now["by_kind"][k], before.get("by_kind", {}).get(k)) for k in KINDS},
            "new_findings": len(keys_now - keys_before),
            "resolved_findings": len(keys_before - keys_now),
            "previous_generated_at": previous.get("generated_at"),
        }

    # -- output ---------------------------------------------------------------------------------------------
    def to_json(self, previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A JSON-ready dict: totals, top wasters, findings (most severe first), missing prices, trend."""
        return {
            "totals": self.totals(),
            "top_wasters": self.top_wasters(),
            "findings": [f.as_dict() for f in self.sorted_findings()],
            "missing_prices": self.missing_prices(),
            "assumptions": list(self.assumptions),
            "rate_table": self.rate_table,
            "pricing": self.pricing,
            "observed_s": None if self.observed_s is None else round(self.observed_s, 3),
            "window": self.window_text(),
            "data_quality": self.quality.as_dict(),
            "trend": self.trend(previous),
        }

    def csv_rows(self) -> list[dict[str, Any]]:
        """One row per finding (evidence and recommended values as JSON)."""
        return [{"kind": f.kind, "workload": f.workload, "container": f.container, "resource": f.resource,
                 "severity": f.severity,
                 "monthly_waste": "" if f.monthly_waste is None else round(f.monthly_waste, 4),
                 "missing_prices": "; ".join(f.missing), "recommendation": f.advice.action,
                 "recommended_values": json.dumps(f.advice.values, sort_keys=True),
                 "evidence": json.dumps(f.evidence, sort_keys=True)} for f in self.sorted_findings()]

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.csv_rows())
        return buf.getvalue()


def analyze_workload(w: WorkloadUsage, rates: RateTable, settings: WasteSettings) -> tuple[list[ResourceCost],
                                                                                            list[Finding]]:
    """Costs and findings of one container."""
    costs: list[ResourceCost] = []
    findings: list[Finding] = []
    p = settings.pricing
    for s in (w.cpu, w.memory):
        if s is None:
            continue
        if s.resource == "memory" and s.unit != "bytes":
            raise ValueError(f"{w.workload}/{w.container}: memory is in {s.unit!r}; convert it to bytes "
                             "(a fraction of the limit times the limit) before the waste analysis")
        costs.append(resource_cost(s, rates, pricing=p))
        findings += detectors.over_provisioned(s, rates, recommender=settings.recommender, pricing=p)
    if w.cpu is not None:
        findings += detectors.idle(w.cpu, rates, pricing=p)
    if w.memory is not None:
        findings += detectors.memory_leak(w.memory, rates, pricing=p)
    if w.gpu_util is not None:
        costs.append(resource_cost(w.gpu_util, rates, gpu_model=w.gpu_model, gpu_count=w.gpu_count, pricing=p))
        findings += detectors.idle_gpu(w.gpu_util, rates, memory=w.gpu_memory, gpu_model=w.gpu_model,
                                       gpu_count=w.gpu_count, recommender=settings.recommender, pricing=p)
    if w.replicas is not None:
        findings += detectors.scaling_churn(w.replicas, replica_hourly_usd=w.replica_hourly_usd,
                                            hours_per_month=rates.hours_per_month)
    return costs, findings


def analyze(workloads: Sequence[WorkloadUsage], rates: RateTable, *, settings: WasteSettings | None = None,
            cache_summary: Mapping[str, Any] | None = None,
            daily_costs: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
            assumptions: Iterable[str] = (), progress: Callable[[int, int], None] | None = None,
            source_issues: Iterable[str] = (), spot_jobs: Sequence[detectors.SpotJob] = (),
            spot_catalog: Any = None) -> WasteReport:
    """Run every detector; ``daily_costs`` maps a workload (or ``"*"``) to (day epochs, USD per day);
    ``source_issues`` are the source's own data-quality notes (rows it could not attribute, ...);
    ``spot_jobs`` (DAG tasks, :func:`~effopt.waste.detectors.spot_jobs_from_usage`) are priced for spot with
    ``spot_catalog`` (:mod:`effopt.spot.catalog`)."""
    settings = settings or WasteSettings()
    costs: list[ResourceCost] = []
    findings: list[Finding] = []
    total = len(workloads)
    for i, w in enumerate(workloads, start=1):
        c, f = analyze_workload(w, rates, settings)
        costs += c
        findings += f
        if progress is not None:
            progress(i, total)
    if cache_summary is not None:
        findings += detectors.cache_inefficiency(cache_summary, rates=rates, period_s=settings.cache_period_s,
                                                 worker_cores=settings.cache_worker_cores, pricing=settings.pricing)
    for name, (days, usd) in (daily_costs or {}).items():
        findings += detectors.cost_anomaly(days, usd, workload=name)
    if spot_catalog is not None:
        for job in spot_jobs:
            findings += detectors.could_run_on_spot(job, spot_catalog)
    return WasteReport(costs, findings, total, list(assumptions), rates.describe(), settings.pricing, settings.top,
                       observed_span(workloads), rates.hours_per_month, DataQuality.of(workloads, source_issues))


def observed_bounds(workloads: Iterable[WorkloadUsage]) -> tuple[float | None, float | None]:
    """(first sample, end of the last sample's interval) over every series of ``workloads``, epoch seconds."""
    firsts, lasts = [], []
    for w in workloads:
        for s in (w.cpu, w.memory, w.gpu_util, w.gpu_memory):
            if s is not None and len(s):
                firsts.append(float(s.timestamps[0]))
                lasts.append(float(s.timestamps[-1]) + s.quality.median_interval_s)
    return (min(firsts), max(lasts)) if firsts else (None, None)


def observed_span(workloads: Iterable[WorkloadUsage]) -> float | None:
    """Seconds of usage ``workloads`` rest on (None without samples)."""
    first, last = observed_bounds(workloads)
    return None if first is None or last is None else last - first
