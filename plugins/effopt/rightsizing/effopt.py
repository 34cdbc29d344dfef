"""effopt's own recommender: recent per-interval peaks with a margin learned from the container's own history.

1. Usage is cut into intervals (``interval_s``, default 1 h); each interval
   gives one statistic: its peak for memory and GPU memory (what an OOM
   kill depends on), its ``cpu_percentile`` for CPU and GPU utilisation.
2. The *level* is a high percentile (``level_percentile``) of those interval
   statistics, each weighted ``2 ** (-age / half_life_s)`` (VPA's decay with
   a shorter half-life): recent intervals dominate, so the recommendation
   follows a container whose usage fell instead of keeping a day-old peak.
3. *Seasonality*: once the history covers ``season_min_cycles`` days, the
   peak of the coming interval's time of day in each earlier day is folded
   into the level, so a daily peak is provisioned before it comes back.
   A recommendation covers the coming ``interval_s`` (the decision step):
   re-run it every interval, as the hourly DAG and the backtest do.
4. The *margin* is learned, not fixed: replaying the same level rule over
   the container's history gives the ratio of each interval's statistic to
   the level known just before it; the margin is a high quantile of those
   ratios (``growth_quantile``), decayed like the level.  With few replayed
   intervals it is blended with ``prior_margin`` (VPA's 15%), so confidence in
   the learned margin grows with history.
5. *Overrun / OOM bump*: an OOM kill, or usage above the previous
   recommendation, raises the target to at least
   ``max(peak + bump_min, peak * (1 + bump_ratio))`` (VPA's OOM rule, peak
   being the usage seen since).
6. *Hysteresis*: a lower target replaces the previous one only when it is
   at least ``hysteresis`` lower, and then by at most ``max_decrease`` per
   decision (a recurring peak is often back within hours); a higher one
   always replaces it at once.

Defaults are principled rather than fitted: hourly peaks (the decision
step), a 3 h half-life for the level, the largest replayed rise as margin
(``growth_quantile`` 1.0: never be surprised twice by a rise already seen),
VPA's 15% as the prior until history exists.

Bounds: lower = the level without margin, upper = the target scaled by VPA's
confidence multiplier ``(1 + 1/c)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from effopt.metrics.series import UsageSeries
from effopt.rightsizing.base import (
    DAY,
    MIB,
    Evidence,
    NotEnoughData,
    Recommendation,
    Recommender,
    confidence_score,
    register,
    vpa_confidence_days,
)
from effopt.rightsizing.histogram import options_for


@dataclass(frozen=True)
class EffoptSettings:
    interval_s: float = 3600.0
    level_percentile: float = 0.9
    half_life_s: float = 3 * 3600.0
    cpu_percentile: float = 0.95
    growth_quantile: float = 1.0
    prior_margin: float = 0.15
    min_margin: float = 0.02
    prior_weight_intervals: float = 3.0
    season_s: float = DAY
    season_min_cycles: float = 1.0
    bump_min_bytes: float = 100 * MIB
    bump_ratio: float = 0.2
    hysteresis: float = 0.05
    max_decrease: float = 0.1
    min_samples: int = 10
    min_cpu_cores: float = 0.010
    min_memory_bytes: float = 100 * MIB


def interval_stats(ts: np.ndarray, vs: np.ndarray, interval_s: float, percentile: float | None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(interval start times, statistic) of the intervals that have samples; statistic = max or a percentile.

    Intervals are aligned to the LAST sample: the newest interval ends at it, so the
    level always includes the most recent full interval.
    """
    idx = np.floor((ts[-1] - ts) / interval_s).astype(int)  # 0 = newest
    n = int(idx.max()) + 1
    if percentile is None:
        stat = np.full(n, -np.inf)
        np.maximum.at(stat, idx, vs)
    else:
        stat = np.full(n, np.nan)
        order = np.argsort(idx, kind="stable")
        bounds = np.searchsorted(idx[order], np.arange(n + 1))
        sorted_vs = vs[order]
        for k in range(n):
            a, b = bounds[k], bounds[k + 1]
            if b > a:
                stat[k] = np.percentile(sorted_vs[a:b], percentile * 100)
    have = np.isfinite(stat)
    starts = ts[-1] - (np.arange(n) + 1) * interval_s
    keep = np.flatnonzero(have)[::-1]  # oldest first
    return starts[keep], stat[keep]


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cum = np.cumsum(w)
    return float(v[min(int(np.searchsorted(cum, q * cum[-1], side="left")), v.size - 1)])


@register
class EffoptRecommender(Recommender[EffoptSettings]):
    name = "effopt"
    settings_class = EffoptSettings

    def _levels(self, starts: np.ndarray, stats: np.ndarray) -> np.ndarray:
        """level[k] = decayed ``level_percentile`` of statistics 0..k (what was known at the end of interval k)."""
        s = self.settings
        levels = np.empty(stats.size)
        for k in range(stats.size):
            w = 2.0 ** ((starts[:k + 1] - starts[k]) / s.half_life_s)
            levels[k] = _weighted_quantile(stats[:k + 1], w, s.level_percentile)
        return levels

    def _seasonal(self, ts: np.ndarray, vs: np.ndarray) -> float | None:
        """Peak of the coming interval's time of day in earlier cycles, once enough cycles are seen."""
        s = self.settings
        if ts[-1] - ts[0] < s.season_min_cycles * s.season_s:
            return None
        now = ts[-1]
        peaks = []
        for d in range(1, int((now - ts[0]) // s.season_s) + 1):
            a = now - d * s.season_s
            window = vs[(ts >= a) & (ts < a + s.interval_s)]
            if window.size:
                peaks.append(float(window.max()))
        return max(peaks) if peaks else None

    def recommend(self, series: UsageSeries, previous: Recommendation | None = None) -> Recommendation:
        s = self.settings
        self._require(series, s.min_samples)
        ts, vs = series.timestamps, series.values
        peak_like = series.resource in ("memory", "gpu_memory")
        starts, stats = interval_stats(ts, vs, s.interval_s, None if peak_like else s.cpu_percentile)
        levels = self._levels(starts, stats)
        level = float(levels[-1])
        notes: list[str] = []
        seasonal = self._seasonal(ts, vs)
        if seasonal is not None and seasonal > level:
            notes.append(f"seasonal peak {seasonal:g} of the same time of day raises the level")
            level = seasonal
        # Learned margin: how far each interval rose above the level known before it.
        ratios = stats[1:] / np.maximum(levels[:-1], np.finfo(float).tiny)
        prior_w = s.prior_weight_intervals
        if ratios.size:
            w = 2.0 ** ((starts[1:] - starts[-1]) / s.half_life_s)
            learned = _weighted_quantile(ratios, w, s.growth_quantile) - 1.0
            margin = (learned * ratios.size + s.prior_margin * prior_w) / (ratios.size + prior_w)
        else:
            learned, margin = float("nan"), s.prior_margin
        margin = max(margin, s.min_margin)
        target = level * (1.0 + margin)
        # Overrun / OOM bump-up.
        bump_from = None
        if series.oom_kills.size:
            bump_from = float(series.oom_kills[-1])
            notes.append(f"{series.oom_kills.size} OOM kill(s)")
        if previous is not None and previous.evidence.window_end is not None:
            since = vs[ts > previous.evidence.window_end]
            if since.size and since.max() > previous.target:
                bump_from = previous.evidence.window_end
                notes.append(f"usage {since.max():g} overran the previous target {previous.target:g}")
        if bump_from is not None:
            seen = float(vs[ts >= bump_from].max()) if np.any(ts >= bump_from) else float(vs.max())
            used = max(seen, previous.target if previous is not None else 0.0, series.request or 0.0)
            min_bump = s.bump_min_bytes if series.unit == "bytes" else 0.0
            target = max(target, used + min_bump, used * (1.0 + s.bump_ratio))
        # Hysteresis: keep a slightly higher previous target; come down gradually from a higher one.
        if previous is not None and target < previous.target:
            if previous.target <= target / (1.0 - s.hysteresis):
                target = previous.target
                notes.append(f"kept the previous target (change < {s.hysteresis:.0%})")
            elif target < previous.target * (1.0 - s.max_decrease):
                target = previous.target * (1.0 - s.max_decrease)
                notes.append(f"lowered by at most {s.max_decrease:.0%} per decision")
        target = max(target, self._minimum(series))
        c = vpa_confidence_days(ts)
        cap = options_for(series.unit).max_value
        upper = min(target * (1.0 + 1.0 / c), cap) if c > 0 else cap
        notes.append(f"margin {margin:.3f} (learned {learned:.3f} from {ratios.size} interval(s))")
        evidence = Evidence(int(vs.size), float(ts[0]), float(ts[-1]), s.level_percentile,
                            f"decaying p{s.level_percentile * 100:g} of {stats.size} {s.interval_s / 3600:g} h "
                            f"{'peaks' if peak_like else f'p{s.cpu_percentile * 100:g}s'} + learned margin",
                            tuple(notes))
        if not np.isfinite(target):
            raise NotEnoughData(f"effopt: {series.workload}/{series.container} {series.resource}: no finite target")
        return self._result(series, target, min(level, target), upper, confidence_score(c), evidence)

    def _minimum(self, series: UsageSeries) -> float:
        if series.unit == "cores":
            return self.settings.min_cpu_cores
        if series.unit == "bytes" and series.resource == "memory":
            return self.settings.min_memory_bytes
        return 0.0
