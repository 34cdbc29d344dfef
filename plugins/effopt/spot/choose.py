"""Instance choice: rank (instance type, zone, capacity type) offerings for a job.

For each instance type that meets the job's needs (vCPUs, memory, GPUs of an
allowed model) and each region and AZ ID the catalog prices it in:

* **on-demand** (one offering per region): one launch, so the expected runtime
  is ``T = C + d``;
* **spot** (one offering per AZ ID): with an hourly interruption hazard
  ``lambda`` (:mod:`effopt.spot.risk`: observed for the zone when given, else
  from the Spot Instance Advisor band), every interruption costs a changeover
  ``d`` plus the work lost since the last checkpoint, ``k / 2`` on average.  The
  expected number of restarts in a runtime ``T`` is ``n = lambda * T`` and
  ``T = C + d + n * (d + k / 2)``, so

      T = (C + d) / (1 - lambda * (d + k / 2)),    n = lambda * T;

  an offering with ``lambda * (d + k / 2) >= 1`` never finishes.

The expected cost is ``price x T`` and the figure offerings are ranked by is
the **expected cost per unit of useful work**, ``price x T / C``.  A spot
offering is used only if it beats the best on-demand offering on that figure
*and* the deadline's slack ``D - C - d`` can absorb one restart ``d + k`` (the
execution policy falls back to on-demand when spot runs late), so whether a
short job should use spot follows from its restart cost, not from a fixed
length.

Diversification, in the manner of EC2's price-capacity-optimized allocation:
the spot pools within ``pool_tolerance`` of the best expected cost (at most
``max_pools``, distinct instance type and AZ ID) are returned in launch order,
the deepest pools (lowest interruption hazard) first, then the cheapest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from effopt.spot.catalog import AdvisorBand, InstanceSpec, PriceCatalog, PriceQuote
from effopt.spot.errors import SpotError
from effopt.spot.risk import Hazard, advisor_hazard

SPOT = "spot"
ON_DEMAND = "on-demand"


@dataclass(frozen=True)
class JobSpec:
    """What a job needs; hours of work ``hours`` (C) by ``deadline_hours`` (D) after it starts."""

    hours: float
    vcpus: float = 0.0
    memory_gib: float = 0.0
    gpus: int = 0
    gpu_models: tuple[str, ...] = ()  # allowed GPU models (empty: any)
    deadline_hours: float | None = None  # None: no deadline
    changeover_hours: float = 0.2  # d
    checkpoint_hours: float = 0.0  # k (0: continuous checkpoints)
    regions: tuple[str, ...] = ()  # allowed regions (empty: all the catalog has)
    instance_types: tuple[str, ...] = ()  # allowed instance types (empty: all that fit)
    capacity_types: tuple[str, ...] = (SPOT, ON_DEMAND)
    max_pools: int = 3
    pool_tolerance: float = 0.15

    def __post_init__(self) -> None:
        for name in ("hours", "vcpus", "memory_gib", "changeover_hours", "checkpoint_hours", "pool_tolerance"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SpotError(f"job {name} = {v!r} must be a finite number")
        if self.hours <= 0:
            raise SpotError(f"job hours = {self.hours!r} must be positive")
        for name in ("vcpus", "memory_gib", "checkpoint_hours", "pool_tolerance"):
            if getattr(self, name) < 0:
                raise SpotError(f"job {name} = {getattr(self, name)!r} must not be negative")
        if self.changeover_hours < 0:
            raise SpotError(f"job changeover_hours (d) = {self.changeover_hours!r} must not be negative")
        if not isinstance(self.gpus, int) or isinstance(self.gpus, bool) or self.gpus < 0:
            raise SpotError(f"job gpus = {self.gpus!r} must be a whole number >= 0")
        if self.deadline_hours is not None and self.deadline_hours < self.hours + self.changeover_hours:
            raise SpotError(f"job deadline_hours = {self.deadline_hours:g} is shorter than its work plus one "
                            f"changeover ({self.hours:g} h + {self.changeover_hours:g} h)")
        unknown = [c for c in self.capacity_types if c not in (SPOT, ON_DEMAND)]
        if unknown or not self.capacity_types:
            raise SpotError(f"job capacity_types {list(self.capacity_types)!r}: use spot and/or on-demand")
        if self.max_pools < 1:
            raise SpotError(f"job max_pools = {self.max_pools!r} must be >= 1")

    @property
    def slack_hours(self) -> float | None:
        return None if self.deadline_hours is None else self.deadline_hours - self.hours - self.changeover_hours

    def as_dict(self) -> dict[str, Any]:
        return {"hours": self.hours, "vcpus": self.vcpus, "memory_gib": self.memory_gib, "gpus": self.gpus,
                "gpu_models": list(self.gpu_models), "deadline_hours": self.deadline_hours,
                "changeover_hours": self.changeover_hours, "checkpoint_hours": self.checkpoint_hours,
                "regions": list(self.regions), "instance_types": list(self.instance_types),
                "capacity_types": list(self.capacity_types), "max_pools": self.max_pools,
                "pool_tolerance": self.pool_tolerance}


@dataclass(frozen=True)
class Offering:
    instance_type: str
    region: str
    az_id: str | None
    capacity: str
    spec: InstanceSpec
    price: PriceQuote
    hazard: Hazard | None
    expected_restarts: float | None
    expected_runtime_h: float | None
    expected_cost: float | None
    cost_per_useful_hour: float | None
    eligible: bool
    reasons: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.instance_type} {self.capacity} {self.region}/{self.az_id or '*'}"

    def as_dict(self) -> dict[str, Any]:
        return {"instance_type": self.instance_type, "region": self.region, "az_id": self.az_id,
                "capacity": self.capacity, "usd_per_hour": self.price.usd_per_hour, "price": self.price.as_dict(),
                "hazard_per_hour": None if self.hazard is None else self.hazard.per_hour,
                "hazard_source": None if self.hazard is None else self.hazard.source,
                "expected_restarts": _r(self.expected_restarts), "expected_runtime_h": _r(self.expected_runtime_h),
                "expected_cost": _r(self.expected_cost), "cost_per_useful_hour": _r(self.cost_per_useful_hour),
                "eligible": self.eligible, "reasons": list(self.reasons), "spec": self.spec.as_dict()}


def _r(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else round(v, 6)


@dataclass(frozen=True)
class Placement:
    """The decision: capacity type, the pools to launch in (in order), the on-demand fallback, and why."""

    capacity: str
    primary: Offering
    pools: tuple[Offering, ...]
    fallback: Offering | None
    ranked: tuple[Offering, ...]
    reasons: tuple[str, ...]
    job: JobSpec
    catalog_source: str = ""
    stale_prices: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (no NaN or infinity: unknown figures are null)."""
        return {"capacity": self.capacity, "primary": self.primary.as_dict(),
                "pools": [o.as_dict() for o in self.pools],
                "fallback": None if self.fallback is None else self.fallback.as_dict(),
                "ranked": [o.as_dict() for o in self.ranked], "reasons": list(self.reasons),
                "job": self.job.as_dict(), "catalog_source": self.catalog_source,
                "stale_prices": list(self.stale_prices)}


def _fits(spec: InstanceSpec, job: JobSpec) -> str | None:
    """None if the type meets the job's needs, else what it lacks."""
    if spec.vcpus < job.vcpus:
        return f"{spec.vcpus:g} vCPUs < {job.vcpus:g}"
    if spec.memory_gib < job.memory_gib:
        return f"{spec.memory_gib:g} GiB < {job.memory_gib:g}"
    if spec.gpu_count < job.gpus:
        return f"{spec.gpu_count} GPUs < {job.gpus}"
    if job.gpus and job.gpu_models and (spec.gpu_model or "").lower() not in {m.lower() for m in job.gpu_models}:
        return f"GPU {spec.gpu_model} not in {', '.join(job.gpu_models)}"
    return None


def _expected(price: float | None, hazard: float, job: JobSpec) -> tuple[float | None, float | None, float | None]:
    """(restarts, runtime, cost) per the module docstring; None where it never finishes or is unpriced."""
    per_restart = job.changeover_hours + job.checkpoint_hours / 2
    if hazard * per_restart >= 1:
        return None, None, None
    runtime = (job.hours + job.changeover_hours) / (1 - hazard * per_restart)
    return hazard * runtime, runtime, None if price is None else price * runtime


def choose(job: JobSpec, catalog: PriceCatalog, *, observed: Mapping[str, Hazard] | None = None,
           exclude: Iterable[tuple[str, str]] = ()) -> Placement:
    """Rank every offering that meets ``job`` and pick the capacity type and launch pools.

    ``observed`` maps an AZ ID (or ``region/az_id``) to an observed hazard that
    replaces the advisor's for that zone.  ``exclude`` lists spot pools
    ``(instance type, AZ ID)`` not to use (e.g. one just interrupted): they stay
    in ``ranked``, ineligible, with the reason.  Steps: price every offering,
    rank them, choose spot or on-demand, then the spot launch pools.
    """
    excluded = {(str(t), str(z)) for t, z in exclude}
    offers, rejected = _offerings(job, catalog, observed or {}, excluded)
    if not offers:
        raise _nothing_fits(job, rejected)
    ranked = sorted(offers, key=lambda o: (not o.eligible, o.cost_per_useful_hour if o.cost_per_useful_hour
                                           is not None else math.inf, o.key))
    eligible = [o for o in ranked if o.eligible]
    if not eligible:
        raise SpotError("no offering with a price meets the job: " + "; ".join(
            f"{o.key}: {', '.join(o.reasons)}" for o in ranked[:3]))
    best_od = next((o for o in eligible if o.capacity == ON_DEMAND), None)
    spots = [o for o in eligible if o.capacity == SPOT]
    use_spot, reasons = _spot_or_on_demand(spots, best_od, ranked)
    if use_spot:
        pools = _launch_pools(spots, job)
        reasons.append(f"{len(pools)} spot pool(s) within {job.pool_tolerance:.0%} of the best expected cost, "
                       "deepest (lowest interruption hazard) first, then cheapest: "
                       + ", ".join(o.key for o in pools))
        if best_od is not None:
            reasons.append(f"fallback on-demand {best_od.key} when spot cannot finish by the deadline")
        primary, capacity = pools[0], SPOT
    else:
        primary, capacity, pools = best_od, ON_DEMAND, [best_od]
    stale = tuple(sorted({f"{o.key}: {o.price.note}" for o in ranked if o.price.stale}))
    return Placement(capacity, primary, tuple(pools), best_od if use_spot else None, tuple(ranked), tuple(reasons),
                     job, catalog.source, stale)


def _offerings(job: JobSpec, catalog: PriceCatalog, observed: Mapping[str, Hazard],
               excluded: set[tuple[str, str]]) -> tuple[list[Offering], dict[str, str]]:
    """(every offering of the instance types that fit the job, in its allowed regions and capacity types;
    instance type -> what it lacks, for the types that do not fit)."""
    if job.instance_types:
        types = [catalog.instance(t).instance_type for t in job.instance_types]  # raises on an unknown type
    else:
        types = catalog.instance_types()
    offers: list[Offering] = []
    rejected: dict[str, str] = {}
    for t in types:
        spec = catalog.instance(t)
        lack = _fits(spec, job)
        if lack:
            rejected[t] = lack
            continue
        regions = [r for r in catalog.regions(t) if not job.regions or r in job.regions]
        for region in regions:
            if ON_DEMAND in job.capacity_types:
                offers.append(_on_demand_offering(job, catalog, t, spec, region))
            if SPOT in job.capacity_types:
                band = catalog.advisor(t, region)
                offers += [_spot_offering(job, catalog, t, spec, region, az, band, observed,
                                          (t, az) not in excluded) for az in catalog.zones(t, region)]
    return offers, rejected


def _on_demand_offering(job: JobSpec, catalog: PriceCatalog, t: str, spec: InstanceSpec, region: str) -> Offering:
    """The on-demand offering of instance type ``t`` in one region: one launch, no restarts."""
    q = catalog.on_demand(t, region)
    _, rt, cost = _expected(q.usd_per_hour, 0.0, job)
    reasons = [f"on-demand ${q.usd_per_hour:.4f}/h, one launch: {rt:.2f} h" if q.usd_per_hour is not None
               else f"no price: {q.note}"]
    return Offering(t, region, None, ON_DEMAND, spec, q, None, 0.0, rt, cost,
                    None if cost is None else cost / job.hours, q.usd_per_hour is not None, tuple(reasons))


def _spot_offering(job: JobSpec, catalog: PriceCatalog, t: str, spec: InstanceSpec, region: str, az: str,
                   band: AdvisorBand | None, observed: Mapping[str, Hazard], usable: bool = True) -> Offering:
    """The spot offering of instance type ``t`` in one AZ ID: its hazard (observed for the zone, else from
    the advisor ``band``), expected restarts, runtime and cost; eligible when priced, finishing, the
    deadline's slack absorbs one restart, and the caller did not exclude it (``usable``)."""
    q = catalog.spot(t, region, az)
    hz = observed.get(f"{region}/{az}") or observed.get(az) or (advisor_hazard(band) if band is not None else None)
    reasons = []
    if q.usd_per_hour is None:
        reasons.append(f"no price: {q.note}")
    elif q.stale:
        reasons.append(f"price {q.note or 'stale'}")
    if hz is None:
        reasons.append("no interruption data (no advisor band, none observed)")
        return Offering(t, region, az, SPOT, spec, q, None, None, None, None, None, False, tuple(reasons))
    n, rt, cost = _expected(q.usd_per_hour, hz.per_hour, job)
    if rt is None:
        reasons.append(f"hazard {hz.per_hour:.4f}/h x (d + k/2) >= 1: restarts never let it finish")
    else:
        reasons.append(f"hazard {hz.per_hour:.5f}/h ({hz.source}): {n:.3f} expected restarts, "
                       f"runtime {rt:.2f} h")
    slack = job.slack_hours
    fits_slack = slack is None or slack >= job.changeover_hours + job.checkpoint_hours
    if not fits_slack:
        reasons.append(f"slack {slack:.2f} h < one restart (d + k = "
                       f"{job.changeover_hours + job.checkpoint_hours:.2f} h)")
    if not usable:
        reasons.append("excluded by the caller (e.g. just interrupted)")
    return Offering(t, region, az, SPOT, spec, q, hz, n, rt, cost, None if cost is None else cost / job.hours,
                    cost is not None and fits_slack and usable, tuple(reasons))


def _nothing_fits(job: JobSpec, rejected: Mapping[str, str]) -> SpotError:
    """The error when no instance type meets the job: its needs, and what the first types lack."""
    need = f"{job.vcpus:g} vCPUs, {job.memory_gib:g} GiB, {job.gpus} GPU(s)" + (
        f" of {', '.join(job.gpu_models)}" if job.gpu_models else "")
    example = "; ".join(f"{t}: {why}" for t, why in list(rejected.items())[:3])
    return SpotError(f"no instance type in the catalog meets {need}"
                     + (f" in {', '.join(job.regions)}" if job.regions else "")
                     + (f" ({example})" if example else ""))


def _spot_or_on_demand(spots: list[Offering], best_od: Offering | None, ranked: list[Offering]
                       ) -> tuple[bool, list[str]]:
    """(whether spot is used: its best offering costs less per useful hour than the best on-demand one, or
    there is no on-demand one; the reasons)."""
    reasons: list[str] = []
    if not spots:
        skipped = [o for o in ranked if o.capacity == SPOT and not o.eligible]
        if skipped:
            reasons.append(f"no eligible spot offering ({skipped[0].key}: {'; '.join(skipped[0].reasons)})")
        return False, reasons
    best = spots[0]
    if best_od is None:
        reasons.append("no on-demand offering allowed or priced: spot")
        return True, reasons
    if best.cost_per_useful_hour < best_od.cost_per_useful_hour:
        reasons.append(f"spot {best.key} costs ${best.cost_per_useful_hour:.4f} per useful hour with "
                       f"{best.expected_restarts:.3f} expected restarts, below on-demand {best_od.key} at "
                       f"${best_od.cost_per_useful_hour:.4f}")
        return True, reasons
    reasons.append(f"best spot {best.key} at ${best.cost_per_useful_hour:.4f} per useful hour (restarts "
                   f"included) is not below on-demand {best_od.key} at ${best_od.cost_per_useful_hour:.4f}")
    return False, reasons


def _launch_pools(spots: list[Offering], job: JobSpec) -> list[Offering]:
    """The spot pools within ``pool_tolerance`` of the best (at most ``max_pools``, distinct instance type and
    AZ ID), deepest (lowest hazard) first, then cheapest."""
    limit = spots[0].cost_per_useful_hour * (1 + job.pool_tolerance)
    pools: list[Offering] = []
    seen: set[tuple[str, str | None]] = set()
    for o in spots:
        if o.cost_per_useful_hour > limit or len(pools) >= job.max_pools:
            break
        if (o.instance_type, o.az_id) not in seen:
            seen.add((o.instance_type, o.az_id))
            pools.append(o)
    pools.sort(key=lambda o: (o.hazard.per_hour, o.price.usd_per_hour, o.key))
    return pools
