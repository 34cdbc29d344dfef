"""The Kubernetes VPA recommender, re-implemented (kubernetes/autoscaler, vertical-pod-autoscaler/pkg/recommender).

* CPU: every sample goes into a decaying histogram (half-life 24 h) with
  weight ``max(request cores, 0.1)``.
* Memory: one PEAK per 24 h aggregation interval; the first interval ends 24 h
  after the first sample, each peak is stamped with its interval's end and
  weighted 1, and the last 8 intervals are kept.  An OOM kill adds a sample
  of ``max(used + 100 MiB, used * 1.2)`` with ``used = max(request, peak of the
  interval so far)``.
* Target / lower / upper = p90 / p50 / p95 of the histogram (bucket ENDS),
  each +15%; the upper bound is scaled by ``(1 + 1/c)``, the lower bound by
  ``(1 + 0.001/c) ** -2`` with VPA's confidence ``c``; finally the per-pod
  minimum (25 millicores, 250 MiB, split evenly over the pod's containers).

Deviation, stated: VPA counts only CPU samples for its confidence; a series
here is one resource, so its own sample count is used.  Values in relative
units (fraction of a limit, percent) use the same 5% bucket growth with a
finer first bucket (see :mod:`effopt.rightsizing.histogram`) and no minimum;
GPU memory follows the memory rules, GPU utilisation the CPU rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from effopt.metrics.series import UsageSeries
from effopt.rightsizing.base import (
    Evidence,
    Recommendation,
    Recommender,
    confidence_score,
    register,
    vpa_confidence_days,
)
from effopt.rightsizing.histogram import DecayingHistogram, options_for
from effopt.rightsizing.oom import OOM_BUMP_RATIO, OOM_MIN_BUMP_BYTES, oom_bump
from effopt.rightsizing.settings import RecommenderSettings, setting
from effopt.units import DAY, MIB


@dataclass(frozen=True)
class VpaSettings(RecommenderSettings):
    """VPA's recommender settings (its defaults)."""

    target_percentile: float = setting(0.9, "percentile of the histogram that is the target", gt=0, le=1)
    lower_percentile: float = setting(0.5, "percentile that is the lower bound", gt=0, le=1)
    upper_percentile: float = setting(0.95, "percentile that is the upper bound", gt=0, le=1)
    safety_margin: float = setting(0.15, "margin added to the target and the bounds", ge=0)
    half_life_s: float = setting(DAY, "half-life of a sample's weight in the histogram, seconds", gt=0)
    memory_interval_s: float = setting(DAY, "memory aggregation interval (one peak each), seconds", gt=0)
    memory_intervals: int = setting(8, "memory aggregation intervals kept", ge=1)
    cpu_min_weight: float = setting(0.1, "smallest weight of a CPU sample (the weight is the request in cores)",
                                    ge=0)
    pod_min_cpu_cores: float = setting(0.025, "smallest CPU per pod, cores", ge=0)
    pod_min_memory_bytes: float = setting(250 * MIB, "smallest memory per pod, bytes", ge=0)
    containers_in_pod: int = setting(1, "containers the per-pod minimums are split over", ge=1)
    oom_min_bump_bytes: float = setting(OOM_MIN_BUMP_BYTES, "OOM bump: at least this many bytes above the usage",
                                        ge=0)
    oom_bump_ratio: float = setting(1 + OOM_BUMP_RATIO, "OOM bump: at least the usage times this", ge=1)


def memory_peaks(ts: np.ndarray, vs: np.ndarray, interval_s: float, oom_kills: np.ndarray | None = None,
                 request: float | None = None, min_bump: float = OOM_MIN_BUMP_BYTES,
                 bump_ratio: float = 1 + OOM_BUMP_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """VPA's per-interval memory peaks: (interval end times, peak values), OOM bump samples included."""
    if ts.size == 0:
        return np.empty(0), np.empty(0)
    start = ts[0]
    idx = np.floor((ts - start) / interval_s).astype(int)
    n = int(idx[-1]) + 1
    peaks = np.full(n, -np.inf)
    np.maximum.at(peaks, idx, vs)
    kills = np.empty(0) if oom_kills is None else oom_kills
    for oom in kills[kills >= start]:
        k = int((oom - start) // interval_s)
        if k >= n:
            continue
        in_interval = (idx == k) & (ts <= oom)
        peak_so_far = float(vs[in_interval].max()) if in_interval.any() else 0.0
        used = max(request or 0.0, peak_so_far)
        peaks[k] = max(peaks[k], oom_bump(used, min_bump, bump_ratio - 1.0))
    ends = start + (np.arange(n) + 1) * interval_s
    have = np.isfinite(peaks)
    return ends[have], peaks[have]


@register
class VpaRecommender(Recommender[VpaSettings]):
    """Faithful re-implementation of the VPA recommender (see the module docstring)."""

    name = "vpa"
    settings_class = VpaSettings

    def recommend(self, series: UsageSeries, previous: Recommendation | None = None,
                  prior: object = None) -> Recommendation:
        s = self.settings
        self._require(series)
        opts = options_for(series.unit)
        hist = DecayingHistogram(opts, s.half_life_s)
        ts, vs = series.timestamps, series.values
        peak_like = series.resource in ("memory", "gpu_memory")
        if peak_like:
            bump = s.oom_min_bump_bytes if series.unit == "bytes" else 0.0
            ends, peaks = memory_peaks(ts, vs, s.memory_interval_s, series.oom_kills, series.request, bump,
                                       s.oom_bump_ratio)
            ends, peaks = ends[-s.memory_intervals:], peaks[-s.memory_intervals:]
            hist.add(peaks, 1.0, ends)
            window_start = float(max(ts[0], ends[0] - s.memory_interval_s))
            method = f"decaying histogram of {peaks.size} peak(s) per {s.memory_interval_s / 3600:g} h"
        else:
            weight = max(series.request or 0.0, s.cpu_min_weight) if series.resource == "cpu" else 1.0
            hist.add(vs, weight, ts)
            window_start = float(ts[0])
            method = "decaying histogram of all samples"
        c = vpa_confidence_days(ts)
        margin = 1.0 + s.safety_margin
        target = hist.percentile(s.target_percentile) * margin
        lower = hist.percentile(s.lower_percentile) * margin
        upper = hist.percentile(s.upper_percentile) * margin
        if c > 0:
            upper *= 1.0 + 1.0 / c
            lower *= (1.0 + 0.001 / c) ** -2.0
        else:
            upper, lower = opts.max_value, 0.0
        upper = min(upper, opts.max_value)
        minimum = self.minimum(series.resource, series.unit)
        target, lower, upper = max(target, minimum), max(lower, minimum), max(upper, minimum)
        notes = (f"confidence {c:.3f} day(s)",) + ((f"{series.oom_kills.size} OOM kill(s)",)
                                                   if series.oom_kills.size else ())
        evidence = Evidence(int(vs.size), window_start, float(ts[-1]), s.target_percentile, method, notes)
        return self._result(series, target, lower, upper, confidence_score(c), evidence)

    def minimum(self, resource: str, unit: str) -> float:
        share = 1.0 / max(1, self.settings.containers_in_pod)
        if resource == "cpu" and unit == "cores":
            return self.settings.pod_min_cpu_cores * share
        if resource == "memory" and unit == "bytes":
            return self.settings.pod_min_memory_bytes * share
        return 0.0
