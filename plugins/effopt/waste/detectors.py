"""Waste detectors: pure functions from usage (plus requests, limits and prices) to findings.

Every detector returns a list of :class:`~effopt.waste.model.Finding` (empty
when nothing is wrong or the data cannot tell: too short, all gaps), never
raises on odd data, and prices the waste with the rate table; a missing
price leaves ``monthly_waste`` at ``None`` with the price named.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from effopt.metrics.series import GAP_FACTOR, UsageSeries
from effopt.prices import RateTable
from effopt.rightsizing.base import NotEnoughData, Recommendation, get_recommender
from effopt.units import DAY, GIB, HOUR, HOURS_PER_MONTH, MIB, format_bytes, format_quantity
from effopt.waste.cost import unit_price
from effopt.waste.model import Advice, Finding, Severity
from effopt.waste.stats import MAD_TO_SIGMA, mad, mann_kendall, theil_sen

#: KRR's severity by absolute gap between request and recommendation: (warning, critical).
GAP_THRESHOLDS: dict[str, tuple[float, float]] = {"cpu": (0.25, 0.5), "memory": (250 * MIB, 500 * MIB)}


def _r(x: float | None, nd: int = 6) -> float | None:
    return None if x is None else round(float(x), nd)


def _hours(series: UsageSeries) -> float:
    return float(series.quality.history_s) / HOUR


# -- over-provisioning ------------------------------------------------------------------------------------------
def over_provisioned(series: UsageSeries, rates: RateTable, *, recommender: str = "krr", pricing: str = "on_demand",
                     percentile: float | None = None, recommendation: Recommendation | None = None) -> list[Finding]:
    """A CPU or memory request well above what the container uses.

    The recommended request comes from the right-sizing ``recommender`` (or a
    ready ``recommendation``); the gap request - recommendation is graded as
    KRR does, by its absolute size (:data:`GAP_THRESHOLDS`), so a large ratio
    on a tiny request is not reported.  Evidence includes the high percentile
    of usage (p95 for CPU, p99 for memory unless ``percentile``).
    """
    if series.resource not in GAP_THRESHOLDS or series.request is None or not len(series):
        return []
    if recommendation is None:
        try:
            recommendation = get_recommender(recommender).recommend(series)
        except NotEnoughData:
            return []
    target = recommendation.target
    gap = float(series.request) - target
    warn, crit = GAP_THRESHOLDS[series.resource]
    if gap < warn:
        return []
    severity: Severity = "critical" if gap >= crit else "warning"
    pct = percentile if percentile is not None else (95.0 if series.resource == "cpu" else 99.0)
    high = float(np.percentile(series.values, pct))
    price = unit_price(rates, series.resource, series.unit, pricing=pricing)
    waste = None if price.usd_per_unit_hour is None else gap * price.usd_per_unit_hour * rates.hours_per_month
    evidence = {f"usage_p{pct:g}": _r(high), "usage_max": _r(float(series.values.max())),
                "request": _r(series.request), "recommended": _r(target), "gap": _r(gap), "unit": series.unit,
                "utilisation": _r(high / series.request if series.request else None, 4),
                "samples": len(series), "history_h": _r(_hours(series), 2)}
    values: dict[str, Any] = {"request": _r(target)}
    if series.resource == "memory":
        values["limit"] = _r(target)
    what = "memory request and limit" if series.resource == "memory" else f"{series.resource} request"
    advice = Advice(f"lower the {what} from {format_quantity(series.request, series.unit)} to "
                    f"{format_quantity(target, series.unit)}", values, f"{recommendation.recommender} recommender")
    return [Finding("over_provisioned", series.workload, series.container, series.resource, severity, evidence,
                    advice, waste, () if price.missing is None else (price.missing,), series.labels)]


# -- idle -------------------------------------------------------------------------------------------------------
def _runs(mask: np.ndarray, ts: np.ndarray, step: float) -> list[tuple[int, int]]:
    """(first, last) sample indices of runs of True, a gap longer than GAP_FACTOR x step ending a run."""
    if not mask.any():
        return []
    breaks = np.flatnonzero(np.diff(ts) > GAP_FACTOR * step) if step > 0 else np.empty(0, dtype=int)
    m = mask.astype(np.int8)
    edges = np.diff(np.concatenate([[0], m, [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    out = []
    for a, b in zip(starts, ends, strict=True):
        cuts = breaks[(breaks >= a) & (breaks < b)]
        lo = a
        for c in cuts:
            out.append((int(lo), int(c)))
            lo = c + 1
        out.append((int(lo), int(b)))
    return out


def idle(series: UsageSeries, rates: RateTable, *, threshold: float | None = None, min_run_s: float = HOUR,
         min_idle_share: float = 0.25, scale_to_zero_share: float = 0.8, min_history_s: float = 6 * HOUR,
         pricing: str = "on_demand") -> list[Finding]:
    """Long runs of (near) zero CPU: the idle share of the time and whether to scale to zero.

    A sample is idle below ``threshold`` cores (default: the larger of 10
    millicores and 5% of the request); only runs of at least ``min_run_s``
    count (a quiet minute is not idleness).  Waste = the cost of what is held
    during those runs.
    """
    if series.resource != "cpu" or len(series) < 3 or series.quality.history_s < min_history_s:
        return []
    thr = threshold if threshold is not None else max(0.010, 0.05 * (series.request or 0.0))
    ts, vs = series.timestamps, series.values
    step = series.quality.median_interval_s
    runs = [(a, b) for a, b in _runs(vs < thr, ts, step) if ts[b] - ts[a] + step >= min_run_s]
    if not runs:
        return []
    total_s = series.quality.history_s + step
    idle_s = sum(ts[b] - ts[a] + step for a, b in runs)
    share = float(idle_s / total_s)
    if share < min_idle_share:
        return []
    severity: Severity = "critical" if share >= scale_to_zero_share else "warning"
    held_idle = float(np.mean(np.concatenate([np.maximum(vs[a:b + 1], series.request or 0.0) for a, b in runs])))
    price = unit_price(rates, "cpu", series.unit, pricing=pricing)
    waste = (None if price.usd_per_unit_hour is None
             else share * held_idle * price.usd_per_unit_hour * rates.hours_per_month)
    longest = max(ts[b] - ts[a] + step for a, b in runs)
    to_zero = share >= scale_to_zero_share
    evidence = {"idle_share": _r(share, 4), "idle_hours": _r(idle_s / HOUR, 2), "idle_runs": len(runs),
                "longest_idle_h": _r(longest / HOUR, 2), "threshold_cores": _r(thr), "request": _r(series.request),
                "mean_usage": _r(float(vs.mean())), "history_h": _r(_hours(series), 2),
                "scale_to_zero_candidate": to_zero}
    action = (f"scale to zero: idle {share:.0%} of the time" if to_zero else
              f"scale down during idle windows ({idle_s / HOUR:.1f} h idle in {len(runs)} run(s))")
    advice = Advice(action, {"replicas_when_idle": 0, "scale_to_zero": to_zero,
                             "idle_hours_per_day": _r(share * 24, 2)})
    return [Finding("idle", series.workload, series.container, "cpu", severity, evidence, advice, waste,
                    () if price.missing is None else (price.missing,), series.labels)]


# -- idle GPUs --------------------------------------------------------------------------------------------------
def _fit_text(fit: Any) -> str:
    """``an A100 80GB MIG 3g.40gb slice (39.2 GiB)`` or ``a whole L4 24GB (22.0 GiB)``."""
    if fit is None:
        return "a GPU"
    return f"{'a' if fit.mig else 'a whole'} {fit.name}{' slice' if fit.mig else ''} ({format_bytes(fit.memory_bytes)})"


def idle_gpu(util: UsageSeries, rates: RateTable, *, memory: UsageSeries | None = None, gpu_model: str | None = None,
             gpu_count: float = 1.0, idle_pct: float = 5.0, min_idle_share: float = 0.5, critical_share: float = 0.8,
             held_bytes: float = GIB, min_samples: int = 10, recommender: str = "krr",
             pricing: str = "on_demand") -> list[Finding]:
    """An allocated GPU with a low duty cycle, and GPU memory held while compute is idle.

    A sample is idle below ``idle_pct`` percent duty cycle; the GPU is
    reported when idle for at least ``min_idle_share`` of the samples.  GPU
    memory (``memory``, bytes) is matched to each utilisation sample (latest
    earlier memory sample); at least ``held_bytes`` median during idle samples
    means memory is held while compute idles.  Waste (OpenCost): GPU count x
    (1 - mean duty cycle) x GPU-hour price.
    """
    if util.resource != "gpu_util" or len(util) < min_samples:
        return []
    duty = np.clip(util.values, 0.0, 100.0)
    idle_mask = duty < idle_pct
    share = float(idle_mask.mean())
    if share < min_idle_share:
        return []
    mean_duty = float(duty.mean())
    hours = _hours(util) + util.quality.median_interval_s / HOUR
    price = unit_price(rates, "gpu", "gpus", gpu_model=gpu_model, pricing=pricing)
    waste = (None if price.usd_per_unit_hour is None
             else gpu_count * (1 - mean_duty / 100.0) * price.usd_per_unit_hour * rates.hours_per_month)
    held = None
    values: dict[str, Any] = {"gpus_when_idle": 0}
    action = f"release the GPU: {share:.0%} of the time under {idle_pct:g}% duty cycle"
    source = "detector"
    if memory is not None and len(memory) and memory.resource == "gpu_memory":
        j = np.searchsorted(memory.timestamps, util.timestamps[idle_mask], side="right") - 1
        j = j[j >= 0]
        held = float(np.median(memory.values[j])) if j.size else None
        if held is not None and held >= held_bytes:
            action = (f"GPU memory ({format_bytes(held)}) is held while compute idles {share:.0%} of the time: "
                      "release the GPU or scale to zero")
            try:
                rec = get_recommender(recommender).recommend(memory)
            except NotEnoughData:
                rec = None
            if rec is not None and rec.gpu is not None:
                fit = rec.gpu.smallest_slice or rec.gpu.smallest_gpu
                values = {"gpu_memory_bytes": _r(rec.target, 0), "gpu": fit.name if fit else None,
                          "gpu_resource": fit.resource if fit else None}
                source = f"{rec.recommender} recommender"
                action = (f"GPU memory is held while compute idles: share the GPU or move to "
                          f"{_fit_text(fit)} for the {format_bytes(rec.target)} it needs, or scale to zero")
    severity: Severity = "critical" if share >= critical_share else "warning"
    evidence = {"idle_share": _r(share, 4), "mean_duty_pct": _r(mean_duty, 3),
                "p95_duty_pct": _r(float(np.percentile(duty, 95)), 3),
                "idle_gpu_hours": _r(share * hours * gpu_count, 3),
                "history_h": _r(hours, 2), "gpu_count": gpu_count, "gpu_model": gpu_model,
                "memory_held_while_idle_bytes": _r(held, 0),
                "memory_held_while_idle": bool(held is not None and held >= held_bytes)}
    return [Finding("idle_gpu", util.workload, util.container, "gpu", severity, evidence,
                    Advice(action, values, source), waste, () if price.missing is None else (price.missing,),
                    util.labels)]


# -- scaling churn ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplicaSeries:
    """Replica count of one workload over time (epoch seconds, counts)."""

    workload: str
    timestamps: np.ndarray
    replicas: np.ndarray
    labels: Mapping[str, str] | None = None


def scaling_churn(replicas: ReplicaSeries, *, replica_hourly_usd: float | None = None, startup_s: float = 60.0,
                  warn_per_day: float = 6.0, critical_per_day: float = 24.0,
                  min_history_s: float = 6 * HOUR, hours_per_month: float = 730.0) -> list[Finding]:
    """Replica-count direction changes (up then down, down then up) per day.

    Waste: each replica started costs ``startup_s`` of a replica that does not
    serve yet, priced at ``replica_hourly_usd`` (the replica's requests at the
    rate table); without it the waste is reported unpriced.
    """
    ts = np.asarray(replicas.timestamps, dtype=float)
    rs = np.asarray(replicas.replicas, dtype=float)
    ok = np.isfinite(ts) & np.isfinite(rs)
    ts, rs = ts[ok], rs[ok]
    order = np.argsort(ts, kind="stable")
    ts, rs = ts[order], rs[order]
    if ts.size < 3 or ts[-1] - ts[0] < min_history_s:
        return []
    d = np.diff(rs)
    moves = d[d != 0]
    signs = np.sign(moves)
    changes = int(np.count_nonzero(signs[1:] != signs[:-1])) if signs.size > 1 else 0
    days = (ts[-1] - ts[0]) / DAY
    per_day = changes / days
    if per_day < warn_per_day:
        return []
    severity: Severity = "critical" if per_day >= critical_per_day else "warning"
    started_per_day = float(d[d > 0].sum()) / days
    missing: tuple[str, ...] = ()
    if replica_hourly_usd is None:
        waste = None
        missing = (f"hourly price of one replica of {replicas.workload} (pass replica_hourly_usd)",)
    else:
        waste = started_per_day * (hours_per_month / 24.0) * startup_s / HOUR * replica_hourly_usd
    flips = np.flatnonzero(d != 0)
    flip_times = ts[1:][flips][np.flatnonzero(signs[1:] != signs[:-1]) + 1] if changes else np.empty(0)
    half_period = float(np.median(np.diff(flip_times))) if flip_times.size > 1 else DAY / max(per_day, 1e-9)
    window = max(300.0, float(np.ceil(2 * half_period / 60.0) * 60.0))
    evidence = {"direction_changes": changes, "changes_per_day": _r(per_day, 3), "days": _r(days, 3),
                "replicas_started_per_day": _r(started_per_day, 3), "min_replicas": int(rs.min()),
                "max_replicas": int(rs.max()), "median_replicas": _r(float(np.median(rs)), 2),
                "median_half_period_s": _r(half_period, 1), "startup_s": startup_s}
    advice = Advice(f"damp the autoscaler: scale-down stabilisation window {window:.0f} s",
                    {"scale_down_stabilization_window_s": int(window),
                     "min_replicas": int(np.ceil(np.median(rs)))})
    return [Finding("scaling_churn", replicas.workload, replicas.workload, "replicas", severity, evidence, advice,
                    waste, missing, dict(replicas.labels or {}))]


# -- memory leaks -----------------------------------------------------------------------------------------------
def troughs(series: UsageSeries, *, window_s: float = HOUR, drop_frac: float = 0.3, noise_sigmas: float = 6.0
            ) -> tuple[np.ndarray, np.ndarray, str]:
    """(times, values, method) of the usage troughs the leak trend is fitted on.

    Garbage-collected memory rises and drops in cycles; its real baseline is
    the minimum of each cycle.  Cycles are cut at drops larger than both
    ``drop_frac`` of the p1..p99 range and ``noise_sigmas`` x the robust
    (MAD) spread of sample-to-sample steps, so noise is not taken for GC.  Once one such drop is seen the
    series is cyclic and only the per-cycle minima count (the first and last
    cycle, possibly cut short by the window, are left out when there are more
    than four): a few long cycles then give too few troughs to claim a leak,
    instead of their ramps being taken for one.  Without drops, the minimum
    of each ``window_s`` is used.
    """
    ts, vs = series.timestamps, series.values
    spread = float(np.percentile(vs, 99) - np.percentile(vs, 1))
    steps = np.diff(vs)
    noise = MAD_TO_SIGMA * mad(steps) if steps.size else 0.0
    drop = max(drop_frac * spread, noise_sigmas * noise)
    cuts = np.flatnonzero(steps < -drop) + 1 if spread > 0 else np.empty(0, dtype=int)
    if cuts.size:
        bounds = np.concatenate([[0], cuts, [vs.size]])
        idx = np.array([a + int(np.argmin(vs[a:b])) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a])
        if idx.size > 4:
            idx = idx[1:-1]
        return ts[idx], vs[idx], "per-cycle minima"
    bins = np.floor((ts - ts[0]) / window_s).astype(np.int64)
    starts = np.flatnonzero(np.concatenate([[True], bins[1:] != bins[:-1]]))
    mins = np.minimum.reduceat(vs, starts)
    ends = np.append(starts[1:], vs.size)
    tmid = (ts[starts] + ts[ends - 1]) / 2
    return tmid, mins, f"{window_s / HOUR:g} h minima"


def memory_leak(series: UsageSeries, rates: RateTable, *, alpha: float = 0.01, min_history_s: float = 6 * HOUR,
                min_points: int = 8, min_growth_frac: float = 0.05, max_points: int = 400,
                pricing: str = "on_demand") -> list[Finding]:
    """Steady growth of the memory troughs: Theil–Sen slope, Mann–Kendall significance.

    Fitted on :func:`troughs`, so a GC sawtooth whose cycles return to the
    same baseline is not a leak.  Reported when the one-sided Mann–Kendall
    p-value is below ``alpha``, the slope is positive and the trend grew by at
    least ``min_growth_frac`` of the median level over the history.  Gives
    growth per hour and the time until the limit is reached.  Waste = memory
    leaked so far (trend growth) held for a month.
    """
    if series.resource not in ("memory", "gpu_memory") or len(series) < min_points:
        return []
    if series.quality.history_s < min_history_s:
        return []
    t, y, method = troughs(series)
    if t.size > max_points:
        keep = np.linspace(0, t.size - 1, max_points).astype(int)
        t, y = t[keep], y[keep]
    if t.size < min_points:
        return []
    _, z, p = mann_kendall(y)
    slope, intercept = theil_sen(t - t[0], y)
    if p >= alpha or slope <= 0:
        return []
    span = float(t[-1] - t[0])
    grown = slope * span
    level = float(np.median(series.values))
    if level <= 0 or grown < min_growth_frac * level:
        return []
    now = float(series.timestamps[-1])
    trend_now = intercept + slope * (now - t[0])
    limit = series.limit
    to_limit_h = None if limit is None else max(0.0, (limit - trend_now) / slope / HOUR)
    severity: Severity = "critical" if to_limit_h is not None and to_limit_h < 24 else "warning"
    waste: float | None = None
    missing: tuple[str, ...] = ()
    if series.resource == "memory":
        price = unit_price(rates, "memory", series.unit, pricing=pricing)
        if price.usd_per_unit_hour is None:
            missing = (str(price.missing),)
        else:
            waste = grown * price.usd_per_unit_hour * rates.hours_per_month
    else:
        missing = ("GPU memory is not priced on its own (it comes with the GPU)",)
    evidence = {"growth_per_hour": _r(slope * HOUR, 1), "unit": series.unit, "grown": _r(grown, 1),
                "mann_kendall_z": _r(z, 3), "p_value": float(f"{p:.3g}"), "points": int(t.size), "method": method,
                "limit": _r(limit), "hours_to_limit": _r(to_limit_h, 2), "trend_now": _r(trend_now, 1),
                "history_h": _r(_hours(series), 2)}
    values: dict[str, Any] = {"growth_per_hour": _r(slope * HOUR, 1)}
    if to_limit_h is not None:
        values["restart_every_h"] = _r(max(to_limit_h, 0.0) * 0.8, 2)
    action = (f"memory grows {slope * HOUR / MIB:.1f} MiB/h without returning to its baseline: find the leak"
              + (f"; limit reached in {to_limit_h:.1f} h" if to_limit_h is not None else ""))
    return [Finding("memory_leak", series.workload, series.container, series.resource, severity, evidence,
                    Advice(action, values), waste, missing, series.labels)]


# -- cache inefficiency -----------------------------------------------------------------------------------------
def cache_inefficiency(summary: Mapping[str, Any], *, rates: RateTable | None = None, period_s: float | None = None,
                       worker_cores: float | None = None, min_calls: int = 20, min_hit_rate: float = 0.5,
                       target_hit_rate: float = 0.8, min_saved_s: float = 1.0,
                       pricing: str = "on_demand") -> list[Finding]:
    """Cached functions with a low hit rate, from :func:`effopt.cache.report.summarize`'s output.

    Time that could be saved = (``target_hit_rate`` - hit rate) x calls x the
    mean compute time of a miss.  Priced as ``worker_cores`` x vCPU-hour over
    the report's ``period_s``, scaled to a month; without them it is unpriced.
    """
    functions = summary.get("functions")
    if not isinstance(functions, list):
        raise ValueError("cache summary has no 'functions' list (expected effopt.cache.report.summarize output)")
    out = []
    for f in functions:
        calls, misses, rate = int(f.get("calls", 0)), int(f.get("misses", 0)), f.get("hit_rate")
        if calls < min_calls or rate is None or rate >= min_hit_rate or misses <= 0:
            continue
        per_miss = float(f.get("compute_s", 0.0)) / misses
        could_save = (target_hit_rate - float(rate)) * calls * per_miss
        if could_save < min_saved_s:
            continue
        missing: list[str] = []
        waste = None
        if rates is None:
            missing.append("rate table (pass rates)")
        if period_s is None or period_s <= 0:
            missing.append("report period (pass period_s)")
        if worker_cores is None:
            missing.append("cores of the worker running the function (pass worker_cores)")
        if not missing and rates is not None and period_s and worker_cores is not None:
            price = unit_price(rates, "cpu", "cores", pricing=pricing)
            if price.usd_per_unit_hour is None:
                missing.append(str(price.missing))
            else:
                waste = (could_save / period_s) * rates.hours_per_month * worker_cores * price.usd_per_unit_hour
        rejected, errors = int(f.get("rejected", 0)), int(f.get("errors", 0))
        if errors:
            action = f"fix {errors} cache backend error(s); hit rate {float(rate):.0%}"
        elif rejected:
            action = f"{rejected} result(s) were rejected by the cache (too large?): raise the entry size limit"
        else:
            action = f"hit rate {float(rate):.0%}: check which arguments change the cache key between calls"
        severity: Severity = "critical" if float(rate) < 0.1 else "warning"
        evidence = {"calls": calls, "hits": int(f.get("hits", 0)), "misses": misses, "hit_rate": float(rate),
                    "compute_s": _r(float(f.get("compute_s", 0.0)), 3), "saved_s": _r(float(f.get("saved_s", 0.0)), 3),
                    "mean_miss_s": _r(per_miss, 4), "could_save_s": _r(could_save, 3), "rejected": rejected,
                    "errors": errors, "target_hit_rate": target_hit_rate}
        out.append(Finding("cache_inefficiency", str(f.get("namespace", "")), str(f.get("function", "")), "cpu",
                           severity, evidence, Advice(action, {"target_hit_rate": target_hit_rate,
                                                               "could_save_s": _r(could_save, 3)}),
                           waste, tuple(missing)))
    return out


# -- cost anomalies ---------------------------------------------------------------------------------------------
def cost_anomaly(days: np.ndarray, usd: np.ndarray, *, workload: str = "*", season_days: int = 7,
                 min_history_days: int = 7, z_threshold: float = 3.5, rel_floor: float = 0.05,
                 scale_window_days: int = 28, labels: Mapping[str, str] | None = None) -> list[Finding]:
    """Days whose cost is far above a seasonal baseline (robust z-score, median/MAD).

    Baseline of a day: the median of the same weekday in earlier weeks when
    at least two are known, else the median of the previous ``season_days``
    days.  Scale: 1.4826 x MAD of the previous ``scale_window_days`` days,
    at least ``rel_floor`` of the baseline (so a flat series does not flag
    cent-level noise).  Only spikes (cost above the baseline) are reported;
    ``monthly_waste`` is the day's excess over the baseline.
    """
    d = np.asarray(days, dtype=float)
    x = np.asarray(usd, dtype=float)
    if d.shape != x.shape:
        raise ValueError(f"cost_anomaly: {d.size} days but {x.size} costs for {workload}")
    ok = np.isfinite(d) & np.isfinite(x)
    d, x = d[ok], x[ok]
    out = []
    for i in range(min_history_days, x.size):
        same = x[i - season_days::-season_days][:4] if i >= season_days else np.empty(0)
        base = float(np.median(same)) if same.size >= 2 else float(np.median(x[max(0, i - season_days):i]))
        prev = x[max(0, i - scale_window_days):i]
        scale = max(MAD_TO_SIGMA * mad(prev), rel_floor * abs(base), 1e-12)
        z = (x[i] - base) / scale
        if z < z_threshold:
            continue
        severity: Severity = "critical" if z >= 2 * z_threshold else "warning"
        excess = float(x[i] - base)
        evidence = {"day": float(d[i]), "cost": _r(float(x[i]), 4), "baseline": _r(base, 4), "robust_z": _r(z, 2),
                    "excess_usd": _r(excess, 4), "scale": _r(scale, 4),
                    "baseline_method": "same weekday" if same.size >= 2 else f"previous {season_days} days"}
        out.append(Finding("cost_anomaly", workload, "*", "cost", severity, evidence,
                           Advice(f"cost {x[i]:.2f} USD vs baseline {base:.2f}: find what changed that day",
                                  {"expected_daily_usd": _r(base, 4)}),
                           excess, (), dict(labels or {})))
    return out


# -- could run on spot ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpotJob:
    """A DAG task as a spot job: hours per run (median of its successful tries), runs per month, the vCPUs and
    memory one run needs, and its deadline (``execution_timeout``) when it has one."""

    workload: str
    container: str
    hours: float
    runs_per_month: float
    vcpus: float
    memory_gib: float
    successes: int
    history_h: float
    deadline_hours: float | None = None
    labels: Mapping[str, str] | None = None


def spot_jobs_from_usage(records: Any, *, deadlines: Mapping[str, float] | None = None, min_runs: int = 3,
                         cpu_percentile: float = 95.0) -> list[SpotJob]:
    """One :class:`SpotJob` per DAG task with at least ``min_runs`` successful tries in the task-usage records
    (:class:`effopt.store.TaskUsageRecord`); ``deadlines`` maps ``dag_id/task_id`` to hours.

    Runs per month = successful runs over the span they cover (first start to last end), scaled to a month;
    vCPUs = the ``cpu_percentile`` of CPU seconds per wall second; memory = the largest peak RSS.
    """
    groups: dict[tuple[str, str], list[Any]] = {}
    for r in records:
        if r.state == "success" and r.wall_s > 0:
            groups.setdefault((r.dag_id, r.task_id), []).append(r)
    out = []
    for (dag_id, task_id), recs in sorted(groups.items()):
        if len(recs) < min_runs:
            continue
        span_h = (max(r.end for r in recs) - min(r.start for r in recs)) / HOUR
        if span_h <= 0:
            continue
        name = f"{dag_id}/{task_id}"
        cores = np.array([r.cpu_s / r.wall_s for r in recs], dtype=float)
        out.append(SpotJob(name, "task", float(np.median([r.wall_s for r in recs])) / HOUR,
                           len(recs) / span_h * HOURS_PER_MONTH, float(np.percentile(cores, cpu_percentile)),
                           max(r.peak_rss_bytes for r in recs) / GIB, len(recs), span_h,
                           (deadlines or {}).get(name), {"dag_id": dag_id, "task_id": task_id}))
    return out


def could_run_on_spot(job: SpotJob, catalog: Any, *, changeover_hours: float = 0.2, min_monthly_usd: float = 1.0,
                      regions: tuple[str, ...] | None = None) -> list[Finding]:
    """A DAG task whose history and deadline allow spot, priced with the spot catalog.

    In every region (of ``regions``, else the catalog's), :func:`effopt.spot.choose` places one run of the
    task with no checkpoint inside it (a restart redoes the whole try: ``k = C``), a changeover ``d`` per launch
    and the task's deadline.  The task is compared where it is cheapest on-demand: when the placement there is
    spot, the finding's money is (on-demand expected cost - spot expected cost, restarts included) per run x
    runs per month.  A task shorter than one changeover (``C < d``) is no candidate: launching capacity for it
    costs more time than its work, so it belongs on shared workers, not on an instance of its own.  Savings
    under ``min_monthly_usd`` are not reported.
    """
    from effopt.spot import JobSpec, SpotError, choose

    if job.hours < changeover_hours:
        return []

    best = None
    for region in regions or sorted({r for t in catalog.instance_types() for r in catalog.regions(t)}):
        try:
            p = choose(JobSpec(hours=job.hours, vcpus=job.vcpus, memory_gib=job.memory_gib,
                               deadline_hours=job.deadline_hours, changeover_hours=changeover_hours,
                               checkpoint_hours=job.hours, regions=(region,)), catalog)
        except SpotError:
            continue  # nothing fits here, or the deadline leaves no room even for on-demand
        od = p.fallback if p.capacity == "spot" else p.primary
        if od is None or od.cost_per_useful_hour is None:
            continue
        if best is None or od.cost_per_useful_hour < best[1].cost_per_useful_hour:
            best = (p, od)
    if best is None or best[0].capacity != "spot":
        return []
    p, od = best
    spot = p.primary
    saving = od.expected_cost - spot.expected_cost
    monthly = saving * job.runs_per_month
    if monthly < min_monthly_usd:
        return []
    severity: Severity = "warning" if saving >= 0.3 * od.expected_cost else "info"
    evidence = {"hours_per_run": _r(job.hours, 4), "runs_per_month": _r(job.runs_per_month, 2),
                "successful_runs": job.successes, "history_h": _r(job.history_h, 2),
                "deadline_hours": job.deadline_hours,
                "vcpus": _r(job.vcpus, 3), "memory_gib": _r(job.memory_gib, 3), "changeover_hours": changeover_hours,
                "on_demand": {"offering": od.key, "usd_per_hour": od.price.usd_per_hour,
                              "expected_cost_per_run": _r(od.expected_cost)},
                "spot": {"offering": spot.key, "usd_per_hour": spot.price.usd_per_hour,
                         "expected_restarts": _r(spot.expected_restarts),
                         "expected_cost_per_run": _r(spot.expected_cost),
                         "pools": [o.key for o in p.pools]},
                "saving_per_run": _r(saving), "catalog": p.catalog_source}
    advice = Advice(f"run on spot: {spot.instance_type} in {spot.az_id} ({len(p.pools)} pool(s), restarts included "
                    f"{saving / od.expected_cost:.0%} cheaper than on-demand {od.instance_type}) with "
                    "SpotKubernetesPodOperator or params={'effopt_spot': True}",
                    {"capacity": "spot", "instance_type": spot.instance_type, "az_id": spot.az_id,
                     "pools": [o.key for o in p.pools], "fallback": od.key}, "spot catalog")
    return [Finding("could_run_on_spot", job.workload, job.container, "instance", severity, evidence, advice,
                    monthly, (), dict(job.labels or {}))]
