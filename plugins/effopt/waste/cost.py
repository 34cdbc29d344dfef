"""OpenCost-style cost model: cost = max(request, usage) x unit price; waste = cost - usage x price.

Per resource and per sample, the container is charged for what it holds:
the larger of its request and its usage.  Averaged over the samples (a
regularly sampled series) and scaled by the rate table's ``hours_per_month``
this gives a monthly cost; usage x price is what the work itself needed,
and the difference is the waste (OpenCost's idle cost of the workload).

Units: CPU in cores (USD per vCPU-hour), memory in bytes (USD per GiB-hour),
GPUs in devices (USD per GPU-hour of the GPU model) with usage = duty cycle
(percent) / 100 x GPU count.  A price the table lacks is reported in
:attr:`ResourceCost.missing` and the USD figures are then ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from effopt.metrics.series import UsageSeries
from effopt.prices import GIB, RateTable


@dataclass(frozen=True)
class UnitPrice:
    """USD per unit of a series per hour, or the missing price named."""

    usd_per_unit_hour: float | None
    unit: str
    missing: str | None = None


def unit_price(rates: RateTable, resource: str, unit: str, *, gpu_model: str | None = None,
               pricing: str = "on_demand") -> UnitPrice:
    """Price of one unit of ``resource`` (in ``unit``) for one hour.

    ``gpu_util`` (percent) and ``gpu`` are priced per GPU of ``gpu_model``;
    ``gpu_memory`` is not priced on its own (it comes with the GPU).
    """
    r = rates.rates_for(pricing)
    if r is None:
        return UnitPrice(None, unit, f"pricing model {pricing!r} (table {rates.describe()} has "
                                     f"{', '.join(sorted(rates.rates)) or 'none'})")
    if resource == "cpu":
        if unit != "cores":
            raise ValueError(f"cpu must be in cores to be priced, got {unit!r}")
        return UnitPrice(r.cpu_per_vcpu_hour, unit)
    if resource == "memory":
        if unit != "bytes":
            raise ValueError(f"memory must be in bytes to be priced, got {unit!r} "
                             "(convert a fraction of the limit with the limit in bytes first)")
        return UnitPrice(r.memory_per_gib_hour / GIB, unit)
    if resource in ("gpu", "gpu_util"):
        if not gpu_model:
            return UnitPrice(None, "gpus", "GPU-hour of a GPU of unknown model (name the GPU model)")
        rate = r.gpu_per_hour.get(gpu_model)
        if rate is None:
            known = ", ".join(sorted(r.gpu_per_hour)) or "none"
            return UnitPrice(None, "gpus", f"GPU-hour of GPU model {gpu_model!r} ({pricing}; table {rates.describe()} "
                                           f"knows {known})")
        return UnitPrice(rate, "gpus")
    raise ValueError(f"resource {resource!r} is not priced on its own; priced: cpu, memory, gpu")


@dataclass(frozen=True)
class ResourceCost:
    """Monthly cost and waste of one resource of one container (USD, or None with ``missing``)."""

    workload: str
    container: str
    resource: str
    cost: float | None
    usage_cost: float | None
    waste: float | None
    hours: float
    missing: tuple[str, ...] = ()
    labels: dict[str, str] | None = None


def held_and_used(series: UsageSeries, *, gpu_count: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per sample (held = max(request, usage), used = usage) in priced units (cores, bytes, GPUs)."""
    if series.resource == "gpu_util":
        used = np.clip(series.values / 100.0, 0.0, 1.0) * gpu_count
        return np.maximum(used, gpu_count), used
    used = series.values
    request = series.request
    held = used if request is None else np.maximum(used, request)
    return held, used


def resource_cost(series: UsageSeries, rates: RateTable, *, gpu_model: str | None = None, gpu_count: float = 1.0,
                  pricing: str = "on_demand") -> ResourceCost:
    """Monthly OpenCost cost and waste of ``series`` (cpu, memory in bytes, or gpu_util for the GPUs)."""
    hours = float(series.quality.history_s) / 3600.0
    price = unit_price(rates, series.resource, series.unit, gpu_model=gpu_model, pricing=pricing)
    if price.usd_per_unit_hour is None:
        return ResourceCost(series.workload, series.container, series.resource, None, None, None, hours,
                            (str(price.missing),), series.labels)
    if not len(series):
        return ResourceCost(series.workload, series.container, series.resource, 0.0, 0.0, 0.0, 0.0, (),
                            series.labels)
    held, used = held_and_used(series, gpu_count=gpu_count)
    per_month = price.usd_per_unit_hour * rates.hours_per_month
    cost = float(held.mean()) * per_month
    usage_cost = float(used.mean()) * per_month
    return ResourceCost(series.workload, series.container, series.resource, cost, usage_cost, cost - usage_cost,
                        hours, (), series.labels)


def daily_costs(series: UsageSeries, rates: RateTable, *, gpu_model: str | None = None, gpu_count: float = 1.0,
                pricing: str = "on_demand") -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """(day start epochs, USD held per day or None, missing price): cost = held x price x time in that day.

    Each sample is charged for the interval until the next sample (the last
    one for the median interval), so a day's cost follows the time covered.
    """
    price = unit_price(rates, series.resource, series.unit, gpu_model=gpu_model, pricing=pricing)
    if not len(series):
        return np.empty(0), np.empty(0), price.missing
    held, _ = held_and_used(series, gpu_count=gpu_count)
    ts = series.timestamps
    dt = np.diff(ts, append=ts[-1] + (series.quality.median_interval_s or 0.0))
    days = np.floor(ts / 86400.0) * 86400.0
    starts, idx = np.unique(days, return_inverse=True)
    if price.usd_per_unit_hour is None:
        return starts, None, price.missing
    usd = np.bincount(idx, weights=held * dt / 3600.0 * price.usd_per_unit_hour, minlength=starts.size)
    return starts, usd, None


def fleet_daily_costs(workloads: Iterable[Any], rates: RateTable, *, pricing: str = "on_demand"
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Total USD per day of every priced series of ``workloads`` (``WorkloadUsage``), for the cost-anomaly
    detector; unpriced series are left out (the report lists their missing prices)."""
    totals: dict[float, float] = {}
    for w in workloads:
        for s in (w.cpu, w.memory, w.gpu_util):
            if s is None:
                continue
            gpu = s.resource == "gpu_util"
            days, usd, _missing = daily_costs(s, rates, gpu_model=w.gpu_model if gpu else None,
                                              gpu_count=w.gpu_count if gpu else 1.0, pricing=pricing)
            if usd is None:
                continue
            for d, u in zip(days.tolist(), usd.tolist(), strict=True):
                totals[d] = totals.get(d, 0.0) + u
    days_sorted = np.array(sorted(totals), dtype=float)
    return days_sorted, np.array([totals[d] for d in days_sorted.tolist()], dtype=float)
