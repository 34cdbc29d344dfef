"""Robusta KRR's "simple" strategy (robusta-dev/krr, robusta_krr/strategies/simple.py).

* CPU request = p95 of usage over the history (no CPU limit);
* memory request = limit = max(max usage x 1.15, limit at an OOM kill x 1.25);
* at least 100 data points and 3 h of history, else no recommendation;
* history 14 days; minimums 10 millicores and 100 MiB.

KRR gives one value, so ``lower == upper == target``.  GPU memory follows the
memory rule, GPU utilisation the CPU rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from effopt.metrics.series import UsageSeries
from effopt.rightsizing.base import (
    Evidence,
    NotEnoughData,
    Recommendation,
    Recommender,
    confidence_score,
    register,
    vpa_confidence_days,
)
from effopt.rightsizing.settings import RecommenderSettings, setting
from effopt.units import DAY, HOUR, MIB


@dataclass(frozen=True)
class KrrSettings(RecommenderSettings):
    """KRR's "simple" strategy settings (its defaults and its descriptions)."""

    cpu_percentile: float = setting(95.0, "the percentile to use for the CPU recommendation", gt=0, le=100)
    memory_buffer_percentage: float = setting(15.0, "the percentage of added buffer to the peak memory usage for "
                                              "the memory recommendation", gt=0, le=100)
    oom_memory_buffer_percentage: float = setting(25.0, "what percentage to increase the memory when there are "
                                                  "OOMKill events", ge=0, le=100)
    points_required: int = setting(100, "the number of data points required to make a recommendation", ge=1)
    min_history_s: float = setting(3 * HOUR, "the shortest history to make a recommendation, seconds", ge=0)
    history_s: float = setting(14 * DAY, "the history looked at, seconds", gt=0)
    cpu_min_cores: float = setting(0.010, "smallest CPU recommendation, cores", ge=0)
    memory_min_bytes: float = setting(100 * MIB, "smallest memory recommendation, bytes", ge=0)


@register
class KrrRecommender(Recommender[KrrSettings]):
    name = "krr"
    settings_class = KrrSettings

    def recommend(self, series: UsageSeries, previous: Recommendation | None = None,
                  prior: object = None) -> Recommendation:
        s = self.settings
        self._require(series)
        keep = series.timestamps >= series.timestamps[-1] - s.history_s
        ts, vs = series.timestamps[keep], series.values[keep]
        history = float(ts[-1] - ts[0])
        if ts.size < s.points_required or history < s.min_history_s:
            raise NotEnoughData(f"krr: {series.workload}/{series.container} {series.resource} has {ts.size} "
                                f"point(s) over {history / 3600:.1f} h; needs {s.points_required} points "
                                f"and {s.min_history_s / 3600:g} h")
        if series.resource in ("memory", "gpu_memory"):
            target = float(vs.max()) * (1 + s.memory_buffer_percentage / 100)
            notes: tuple[str, ...] = ()
            if series.oom_kills.size and series.limit:
                target = max(target, series.limit * (1 + s.oom_memory_buffer_percentage / 100))
                notes = (f"{series.oom_kills.size} OOM kill(s) at limit {series.limit:g}",)
            percentile: float = 100.0
            minimum = s.memory_min_bytes if series.resource == "memory" and series.unit == "bytes" else 0.0
            method = f"max usage + {s.memory_buffer_percentage:g}%"
        else:
            target = float(np.percentile(vs, s.cpu_percentile))
            notes = ()
            percentile = s.cpu_percentile
            minimum = s.cpu_min_cores if series.resource == "cpu" and series.unit == "cores" else 0.0
            method = f"p{s.cpu_percentile:g} of usage"
        target = max(target, minimum)
        evidence = Evidence(int(vs.size), float(ts[0]), float(ts[-1]), percentile / 100, method, notes)
        return self._result(series, target, target, target, confidence_score(vpa_confidence_days(ts)), evidence)
