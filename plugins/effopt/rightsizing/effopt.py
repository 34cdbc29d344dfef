"""effopt's own recommender: recent per-interval peaks with a margin learned from the container's own history.

1. Usage is cut into intervals (``interval_s``, 1 h); each gives one
   statistic: its peak for memory and GPU memory (what an OOM kill depends
   on), its ``cpu_percentile`` for CPU and GPU utilisation.
2. *Level*: a high percentile (``level_percentile``) of the interval
   statistics, each weighted ``2 ** (-age / half_life_s)``, so the level
   follows a container whose usage fell.  A *growth trend* (a decay-weighted
   Theil-Sen slope of the log statistics after ``burn_in_intervals``, only
   when positive) is projected one interval ahead.  *Seasonality*: the
   level is raised to the largest statistic of the same slot in earlier
   cycles, the same hour of the week once every hour of the week has been
   seen ``weekly_min_cycles`` times, else the same hour of the day after
   ``season_min_cycles`` days; with a season the trend is that of
   statistic / envelope.
3. *Margin*, learned: replaying the level rule (season included) over the
   container's history gives the ratio of each interval's statistic to the
   level known just before it; the container's own margin is the
   ``1 - target_overrun_rate`` quantile of those ratios (age-weighted like
   the level, the first ``burn_in_intervals`` left out).  It is blended with
   a *prior* margin counted as ``prior_weight_intervals`` intervals, so the
   prior governs a container's first hours and fades as its own history
   grows.  The prior is the fleet's (:meth:`EffoptRecommender.calibrate`):
   the same quantile of the ratios replayed over every series of the kind,
   weighted by age (a weighted conformal quantile), *localized to
   containers like the one decided*: each pooled ratio is also weighted by
   a Gaussian kernel in the log of the size its container had then (its
   largest interval statistic so far) around the decided container's size
   and, with ``localize_by_spread``, in the range (``1 - min / max``) of the
   interval before it around the range of the decided container's last
   interval (a steady hour is rarely followed by a jump, a moving one more
   often), bandwidths by Silverman's rule, and the localized quantile is
   shrunk toward the whole fleet's with a weight of ``fleet_min_ratios``
   ratios.
   With fewer than ``fleet_min_ratios`` effective pooled ratios, or
   uncalibrated, the prior is ``prior_margin``.
4. *OOM / overrun bump*: after an OOM kill, or usage above the previous
   recommendation, the target is at least VPA's ``max(used + bump_min,
   used * (1 + bump_ratio))`` (:func:`~effopt.rightsizing.oom.oom_bump`).
5. *Hysteresis*: a lower target replaces the previous one only when at
   least ``hysteresis`` lower, and then by at most ``max_decrease`` per
   decision; a higher one replaces it at once.

A recommendation covers the coming ``interval_s``: re-run it every interval.
Bounds: lower = the level, upper = the target times VPA's ``(1 + 1/c)``.
Confidence: VPA's ``c / (1 + c)`` times the share of the margin the
container's own history supplies; the evidence's ``fleet_weight`` is the
share the prior supplies, and a note says when the recommendation rests
mostly on the fleet.  Each setting documents itself (:class:`EffoptSettings`);
why each default is what it is, and what was tried, is in
``bench/RESULTS-rightsizing.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

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
from effopt.rightsizing.histogram import options_for
from effopt.rightsizing.oom import OOM_BUMP_RATIO, OOM_MIN_BUMP_BYTES, oom_bump
from effopt.rightsizing.settings import RecommenderSettings, setting
from effopt.units import DAY, HOUR, MIB, WEEK

#: Pairs of intervals older than this many half-lives are left out of the growth trend (weight < 2**-16).
TREND_HALF_LIVES = 8


@dataclass(frozen=True)
class EffoptSettings(RecommenderSettings):
    """effopt's settings; one set for every container and resource kind (nothing is fitted per container)."""

    interval_s: float = setting(HOUR, "length of the intervals whose statistic the level is made of (the "
                                "decision step), seconds", gt=0)
    level_percentile: float = setting(0.95, "percentile of the decayed interval statistics that is the level",
                                      gt=0, le=1)
    half_life_s: float = setting(3 * HOUR, "half-life of an interval's weight in the level, the trend, the "
                                 "container's own margin and the fleet prior, seconds", gt=0)
    cpu_percentile: float = setting(0.95, "statistic of an interval for CPU and GPU utilisation (memory uses the "
                                    "peak)", gt=0, le=1)
    growth_quantile: float | None = setting(None, "quantile of the replayed rises a margin is read at; none: 1 - "
                                            "target_overrun_rate", gt=0, le=1)
    target_overrun_rate: float = setting(0.02, "overrun probability per decision the margins are calibrated to",
                                         gt=0, lt=1)
    fleet_min_ratios: int = setting(20, "effective number of pooled ratios below which a fleet quantile is not "
                                    "used (the fixed prior_margin is)", ge=1)
    prior_margin: float = setting(0.15, "prior margin without a fleet calibration (VPA's and KRR's 15%)", ge=0)
    min_margin: float = setting(0.02, "smallest margin", ge=0)
    prior_weight_intervals: float = setting(5.0, "weight of the prior margin, in replayed intervals, against the "
                                            "container's own", ge=0)
    season_s: float = setting(DAY, "length of the daily cycle, seconds", gt=0)
    season_min_cycles: float = setting(1.0, "daily cycles of history before the daily profile is used (inf: "
                                       "never)", ge=0)
    weekly_min_cycles: float = setting(2.0, "weekly cycles of history before the weekly profile replaces the "
                                       "daily one (inf: never)", ge=0)
    bump_min_bytes: float = setting(OOM_MIN_BUMP_BYTES, "after an OOM kill or an overrun, at least this many bytes "
                                    "above the usage seen (VPA's 100 MiB)", ge=0)
    bump_ratio: float = setting(OOM_BUMP_RATIO, "after an OOM kill or an overrun, at least this ratio above the "
                                "usage seen (VPA's 20%)", ge=0)
    hysteresis: float = setting(0.05, "a lower target replaces the previous one only when it is at least this much "
                                "lower", ge=0, lt=1)
    max_decrease: float = setting(0.1, "largest decrease of the target per decision", gt=0, le=1)
    min_samples: int = setting(10, "fewest usable samples to recommend from", ge=1)
    trend: bool = setting(True, "project the robust growth trend of the interval statistics one interval ahead")
    burn_in_intervals: int = setting(2, "first replayed intervals left out of the container's own margin and the "
                                     "trend", ge=0)
    localize_prior: bool = setting(True, "the fleet prior of containers of the container's size (its largest usage "
                                   "seen) rather than of the whole fleet")
    localize_by_spread: bool = setting(True, "the fleet prior also of containers whose last interval was as steady "
                                       "(its range, 1 - min / max): rises that followed a steady hour")
    min_cpu_cores: float = setting(0.010, "smallest CPU request, cores", ge=0)
    min_memory_bytes: float = setting(100 * MIB, "smallest memory request, bytes", ge=0)


def _interval_index(ts: np.ndarray, interval_s: float) -> np.ndarray:
    """Each sample's interval, counted back from the one ending at the last sample (0 = newest)."""
    return np.floor((ts[-1] - ts) / interval_s).astype(int)


def _run_starts(idx: np.ndarray) -> np.ndarray:
    """Where each interval's samples begin: samples are sorted by time, so an interval's samples are one run of
    equal ``idx``, the oldest interval first."""
    change = np.empty(idx.size, dtype=bool)
    change[0] = True
    np.not_equal(idx[1:], idx[:-1], out=change[1:])
    return np.flatnonzero(change)


def interval_stats(ts: np.ndarray, vs: np.ndarray, interval_s: float, percentile: float | None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(interval start times, statistic) of the intervals that have samples; statistic = max or a percentile.

    Intervals are aligned to the LAST sample: the newest interval ends at it, so the
    level always includes the most recent full interval.
    """
    idx = _interval_index(ts, interval_s)
    n = int(idx.max()) + 1
    if percentile is None:
        stat = np.full(n, -np.inf)
        first = _run_starts(idx)
        stat[idx[first]] = np.maximum.reduceat(vs, first)
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


def interval_spreads(ts: np.ndarray, vs: np.ndarray, interval_s: float) -> np.ndarray:
    """The range ``1 - min / max`` of each interval that has samples (0: flat), the intervals of
    :func:`interval_stats` in its order (oldest first); 0 for an interval whose max is not above 0."""
    first = _run_starts(_interval_index(ts, interval_s))
    hi, lo = np.maximum.reduceat(vs, first), np.minimum.reduceat(vs, first)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(hi > 0, 1.0 - np.maximum(lo, 0.0) / hi, 0.0)
    return spread  # samples are in time order, so runs are oldest first: the order interval_stats keeps


@lru_cache(maxsize=64)  # the trend's window sizes: a handful with any settings
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``i < j`` of ``n`` items (``np.triu_indices(n, 1)``), cached: the trend asks for the same
    few sizes once per interval of every replay."""
    i, j = np.triu_indices(n, 1)
    i.flags.writeable = j.flags.writeable = False
    return i, j


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cum = np.cumsum(w)
    return float(v[min(int(np.searchsorted(cum, q * cum[-1], side="left")), v.size - 1)])


#: Rows of the vectorised replay are computed in blocks of about this many matrix elements (bounded memory).
_BLOCK_ELEMENTS = 1 << 20


def _row_weighted_quantiles(values: np.ndarray, weights: np.ndarray, q: float) -> np.ndarray:
    """:func:`_weighted_quantile` of every row of ``values`` (entries of weight 0 take no part; each row
    needs one entry of positive weight)."""
    order = np.argsort(values, axis=1)
    v = np.take_along_axis(values, order, axis=1)
    cum = np.cumsum(np.take_along_axis(weights, order, axis=1), axis=1)
    idx = np.minimum(np.sum(cum < q * cum[:, -1:], axis=1), values.shape[1] - 1)
    return v[np.arange(values.shape[0]), idx]


def _prefix_weighted_quantiles(starts: np.ndarray, stats: np.ndarray, half_life_s: float, q: float) -> np.ndarray:
    """For every k, :func:`_weighted_quantile` of ``stats[:k + 1]`` weighted ``2 ** ((starts - starts[k]) /
    half_life_s)``: one row per k, later intervals at weight 0, in blocks of rows."""
    n = stats.size
    out = np.empty(n)
    order = np.argsort(stats)  # once: every prefix is the sorted whole with later intervals at weight 0
    v, s_sorted = stats[order], starts[order]
    block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    for a in range(0, n, block):
        k = np.arange(a, min(n, a + block))
        expo = np.minimum((s_sorted[None, :] - starts[k][:, None]) / half_life_s, 0.0)
        cum = np.cumsum(np.where(order[None, :] <= k[:, None], 2.0 ** expo, 0.0), axis=1)
        out[k] = v[np.minimum(np.sum(cum < q * cum[:, -1:], axis=1), n - 1)]
    return out


class _Replay(NamedTuple):
    """The level rule replayed over a series' intervals (oldest first)."""

    starts: np.ndarray  # interval start times
    stats: np.ndarray  # interval statistics (peak, or a percentile for CPU)
    levels: np.ndarray  # level known at the end of each interval
    envelopes: np.ndarray  # seasonal envelope of each interval and, last, of the coming one (NaN: none)
    periods: np.ndarray  # the cycle each envelope came from, seconds (0: none)
    spreads: np.ndarray  # range of each interval, 1 - min / max (0: flat)


@dataclass(frozen=True)
class FleetPool:
    """One resource kind's replayed rises pooled over the fleet, for the localized prior: the ratios sorted,
    their age weights, the log size (the container's largest statistic when the level they were measured
    against was known) and the range of the interval before them (``1 - min / max``), with the kernel
    bandwidths in each (Silverman's rule of thumb; a bandwidth of 0 leaves that feature out)."""

    ratios: np.ndarray
    weights: np.ndarray
    log_sizes: np.ndarray
    bandwidth: float
    spreads: np.ndarray | None = None
    spread_bandwidth: float = 0.0

    @property
    def by_spread(self) -> bool:
        """Whether the pool is localized by range too (it has ranges and a bandwidth for them)."""
        return self.spreads is not None and self.spread_bandwidth > 0

    def localized(self, log_size: float, q: float, spread: float | None = None) -> tuple[float, float] | None:
        """(``q`` quantile of the ratios weighted by age x a Gaussian kernel in log size around ``log_size``
        (and in the range around ``spread``, when given and the pool has ranges), effective number of ratios
        it rests on); None when no ratio is near enough to weigh anything."""
        if not (self.bandwidth > 0 and np.isfinite(log_size)):
            return None
        z = ((self.log_sizes - log_size) / self.bandwidth) ** 2
        if spread is not None and self.by_spread:
            z = z + ((self.spreads - spread) / self.spread_bandwidth) ** 2
        w = self.weights * np.exp(-0.5 * z)
        top = float(w.max()) if w.size else 0.0
        if not top > 0:
            return None
        w = w / top  # the largest weight 1: no underflow in the effective count
        total = float(w.sum())
        cum = np.cumsum(w)
        value = float(self.ratios[min(int(np.searchsorted(cum, q * total, side="left")), self.ratios.size - 1)])
        return value, total ** 2 / float(np.sum(w * w))


@dataclass(frozen=True)
class FleetPrior:
    """A fleet-level margin prior made by :meth:`EffoptRecommender.calibrate`.

    ``margins`` maps a resource kind to ``(margin, effective number of
    weighted ratios pooled, series pooled)``, the whole fleet's; ``pools``
    holds the pooled rises each kind's prior is localized from (the prior of
    containers like the one decided: of its size); ``data_end`` is the newest
    sample time the calibration saw (None when it saw no sample), so a caller
    can check it used only earlier data; ``keys`` are the series it pooled
    (workload, container, resource), so a caller can check whose data it holds.
    """

    margins: dict[str, tuple[float, int, int]]
    data_end: float | None
    pools: dict[str, FleetPool] = field(default_factory=dict)
    keys: frozenset[tuple[str, str, str]] = frozenset()


@register
class EffoptRecommender(Recommender[EffoptSettings]):
    name = "effopt"
    settings_class = EffoptSettings

    def __init__(self, settings: EffoptSettings | None = None, **overrides: object) -> None:
        super().__init__(settings, **overrides)
        # The replays the last calibration made, by series identity: recommending for the same series
        # objects (``recommend_all``) reuses them instead of replaying every series twice.
        self._calibrated_replays: dict[int, tuple[UsageSeries, _Replay]] = {}

    @property
    def quantile(self) -> float:
        """The quantile of replayed ratios a margin is read at: ``growth_quantile`` or ``1 - target_overrun_rate``."""
        s = self.settings
        return s.growth_quantile if s.growth_quantile is not None else 1.0 - s.target_overrun_rate

    def _replay(self, series: UsageSeries) -> _Replay:
        cached = self._calibrated_replays.get(id(series))
        if cached is not None and cached[0] is series:  # series are frozen: same object, same replay
            return cached[1]
        s = self.settings
        peak_like = series.resource in ("memory", "gpu_memory")
        starts, stats = interval_stats(series.timestamps, series.values, s.interval_s,
                                       None if peak_like else s.cpu_percentile)
        envelopes, periods = self._envelopes(starts, stats)
        spreads = interval_spreads(series.timestamps, series.values, s.interval_s)
        return _Replay(starts, stats, self._levels(starts, stats, envelopes), envelopes, periods, spreads)

    def _envelopes(self, starts: np.ndarray, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Seasonal envelope of each interval (oldest first) and, last, of the coming one, with the cycle
        (seconds) it came from; NaN and 0 where the history before the interval is shorter than a cycle.
        Slots are counted in whole intervals from the oldest, so "the same slot one cycle earlier" is
        exact (a cycle that is not a whole number of intervals is not used)."""
        s = self.settings
        slots = np.rint((starts - starts[0]) / s.interval_s).astype(np.int64)
        slots = np.append(slots, slots[-1] + 1)  # the coming interval
        out = np.full(slots.size, np.nan)
        used = np.zeros(slots.size)
        cycles = ((WEEK, s.weekly_min_cycles), (s.season_s, s.season_min_cycles))
        periods = [(round(p / s.interval_s), c) for p, c in cycles
                   if math.isfinite(c) and math.isclose(p / s.interval_s, round(p / s.interval_s), rel_tol=1e-5,
                                                        abs_tol=1e-8) and p >= s.interval_s]
        if not periods or slots[-1] < min(c * p for p, c in periods):
            return out, used  # shorter than every cycle: no envelope anywhere
        by_slot = dict(zip(slots[:-1].tolist(), stats.tolist(), strict=True))
        for j, slot in enumerate(slots.tolist()):
            for period, min_cycles in periods:  # weekly first: it replaces the daily profile once established
                if slot < min_cycles * period:
                    continue
                seen = [by_slot[k] for k in range(slot - period, -1, -period) if k in by_slot]
                if seen:
                    out[j], used[j] = max(seen), period * s.interval_s
                    break
        return out, used

    @staticmethod
    def _basis(levels: np.ndarray, envelopes: np.ndarray) -> np.ndarray:
        """What each interval after the first was predicted from: the level known before it, raised to
        its seasonal envelope."""
        env = envelopes[1:levels.size]
        seasonal = np.isfinite(env)
        if not seasonal.any():
            return levels[:-1]
        return np.where(seasonal, np.maximum(levels[:-1], np.where(seasonal, env, 0.0)), levels[:-1])

    def replayed_ratios(self, series: UsageSeries) -> np.ndarray:
        """Each interval's statistic over the level known just before it (raised to the interval's
        seasonal envelope), replayed over ``series`` (oldest first).

        Intervals after a level of 0 have no ratio (nothing to scale a margin by).
        """
        return self._replayed(series)[1]

    def _replayed(self, series: UsageSeries) -> tuple[np.ndarray, np.ndarray]:
        """(start time of each ratio's interval, :meth:`replayed_ratios`)."""
        return self._replayed_with_size(series)[:2]

    def _replayed_with_size(self, series: UsageSeries) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(start time of each ratio's interval, :meth:`replayed_ratios`, the container's size when the level
        each was taken against was known: its largest interval statistic so far, and the range of the
        interval before each ratio's: the last one known then)."""
        if series.values.size < 2:
            return np.empty(0), np.empty(0), np.empty(0), np.empty(0)
        r = self._replay(series)
        basis = self._basis(r.levels, r.envelopes)
        ok = basis > 0
        return (r.starts[1:][ok], r.stats[1:][ok] / basis[ok], np.maximum.accumulate(r.stats)[:-1][ok],
                r.spreads[:-1][ok])

    def calibrate(self, series: Sequence[UsageSeries]) -> FleetPrior:
        """The fleet prior calibrated on ``series``, to pass to :meth:`recommend`.

        Pools :meth:`replayed_ratios` of all ``series`` of each resource kind
        (a hierarchical, empirical-Bayes prior: what the fleet's rises were
        like, for containers with too little history of their own) and keeps
        their ``1 - target_overrun_rate`` quantile, minus 1, as the prior
        margin of that kind.  Each ratio is weighted
        ``2 ** (-age / half_life_s)`` (age from the newest interval of that
        kind), the half-life of a container's own level and margin: a weighted
        conformal quantile for data that drift (Barber, Candes, Ramdas and
        Tibshirani, "Conformal prediction beyond exchangeability", 2023), so a
        fleet-wide phase that has passed (a start-up ramp, a rollout) stops
        setting today's margin.  ``fleet_min_ratios`` is compared with the
        effective number of weighted ratios, ``(sum w)^2 / sum w^2``.  It
        sees only what it is given: the backtest passes every container cut
        strictly before the decision time, so a calibration cannot see data
        at or after it.
        """
        pooled: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = {}
        end: float | None = None
        keys: set[tuple[str, str, str]] = set()
        self._calibrated_replays = {}
        for x in series:
            if not x.values.size:
                continue
            end = float(x.timestamps[-1]) if end is None else max(end, float(x.timestamps[-1]))
            keys.add(x.key)
            replay = self._replay(x)
            self._calibrated_replays[id(x)] = (x, replay)
            starts, ratios, sizes, spreads = self._replayed_with_size(x)
            if ratios.size:
                pooled.setdefault(x.resource, []).append((starts, ratios, sizes, spreads))
        margins: dict[str, tuple[float, int, int]] = {}
        pools: dict[str, FleetPool] = {}
        for kind, parts in pooled.items():
            starts = np.concatenate([p[0] for p in parts])
            ratios = np.concatenate([p[1] for p in parts])
            w = 2.0 ** ((starts - starts.max()) / self.settings.half_life_s)
            effective = w.sum() ** 2 / np.sum(w * w)
            margins[kind] = (_weighted_quantile(ratios, w, self.quantile) - 1.0, int(effective), len(parts))
            spreads = np.concatenate([p[3] for p in parts]) if self.settings.localize_by_spread else None
            pools[kind] = self._pool(ratios, w, np.log(np.concatenate([p[2] for p in parts])), effective, spreads)
        return FleetPrior(margins, end, pools, frozenset(keys))

    @staticmethod
    def _pool(ratios: np.ndarray, w: np.ndarray, log_sizes: np.ndarray, effective: float,
              spreads: np.ndarray | None = None) -> FleetPool:
        """The pool the localized prior reads: ratios weighing at least 2**-16 (older ones change no quantile
        that matters, and the pool stays small), sorted by value, with Silverman's bandwidths: ``1.06 sigma
        n ** (-1/5)`` in log size alone, ``sigma n ** (-1/6)`` per feature for the product kernel in log size
        and range (sigma the weighted standard deviation of the feature, n the effective number of ratios)."""
        keep = w >= 2.0 ** -16
        ratios, w, log_sizes = ratios[keep], w[keep], log_sizes[keep]
        order = np.argsort(ratios, kind="stable")

        def sigma(x: np.ndarray) -> float:
            mean = float(np.sum(w * x) / w.sum())
            return float(np.sqrt(np.sum(w * (x - mean) ** 2) / w.sum()))

        if spreads is None:
            return FleetPool(ratios[order], w[order], log_sizes[order], 1.06 * sigma(log_sizes) * effective ** -0.2)
        spreads = spreads[keep]
        h = effective ** (-1.0 / 6.0)
        return FleetPool(ratios[order], w[order], log_sizes[order], sigma(log_sizes) * h, spreads[order],
                         sigma(spreads) * h)

    def prior_margin(self, resource: str, fleet: FleetPrior | None,
                     size: float | None = None, spread: float | None = None) -> tuple[float, str]:
        """(prior margin for ``resource``, where it comes from).

        Calibrated on enough ratios, it is the fleet's, localized to containers of size ``size`` (when given:
        the largest interval statistic seen): the quantile of the rises the fleet's containers made when they
        were of similar size (kernel weights in log size),
        shrunk toward the whole fleet's quantile with a weight of ``fleet_min_ratios`` ratios, so a size few
        containers share falls back on the fleet.  Otherwise the fixed ``prior_margin``."""
        s = self.settings
        if fleet is None or resource not in fleet.margins or fleet.margins[resource][1] < s.fleet_min_ratios:
            return s.prior_margin, f"fixed prior margin {s.prior_margin:.3f} (not calibrated on a fleet)"
        margin, n, k = fleet.margins[resource]
        margin = max(margin, 0.0)
        pool = fleet.pools.get(resource)
        local = pool.localized(float(np.log(size)), self.quantile, spread) if pool is not None and size and \
            size > 0 else None
        if local is None:
            return margin, f"fleet prior margin {margin:.3f} from {n} effective ratio(s) of {k} series"
        near, m = max(local[0] - 1.0, 0.0), local[1]
        blended = (near * m + margin * s.fleet_min_ratios) / (m + s.fleet_min_ratios)
        like = "containers of its size"
        if spread is not None and pool.by_spread:
            like += f" after an hour that moved as much as its last one ({spread:.0%})"
        return blended, (f"fleet prior margin {blended:.3f}: {near:.3f} from {m:.0f} effective ratio(s) of "
                         f"{like}, shrunk toward the fleet's {margin:.3f} from {n} effective ratio(s) of {k} series")

    def _levels(self, starts: np.ndarray, stats: np.ndarray, envelopes: np.ndarray) -> np.ndarray:
        """level[k] = decayed ``level_percentile`` of statistics 0..k, times the growth trend known then
        (what was known at the end of interval k, for the interval after it).

        Computed for every k at once (:func:`_prefix_weighted_quantiles`, :meth:`_growths`); the same
        numbers as :func:`_weighted_quantile` and :meth:`_growth` interval by interval."""
        s = self.settings
        return _prefix_weighted_quantiles(starts, stats, s.half_life_s, s.level_percentile) * np.exp(
            self._growths(starts, stats, envelopes))

    def _growths(self, starts: np.ndarray, stats: np.ndarray, envelopes: np.ndarray) -> np.ndarray:
        """:meth:`_growth` for every interval k, vectorised over k: each row holds the window of intervals
        the trend of k looks at (padded to the longest), its pairwise slopes and their weights."""
        s = self.settings
        n = stats.size
        out = np.zeros(n)
        if not s.trend or n < 2:
            return out
        first = np.maximum(s.burn_in_intervals,
                           np.searchsorted(starts, starts - TREND_HALF_LIVES * s.half_life_s, side="left"))
        m = int(max(1, np.max(np.arange(n) - first + 1)))
        if m < 2:
            return out
        pi, pj = _pairs(m)
        block = max(1, _BLOCK_ELEMENTS // max(pi.size, m))
        for a in range(0, n, block):
            k = np.arange(a, min(n, a + block))
            idx = k[:, None] - (m - 1) + np.arange(m)[None, :]  # the window ends at k
            valid = idx >= first[k][:, None]
            safe = np.clip(idx, 0, n - 1)
            x = stats[safe]
            seasonal = np.isfinite(envelopes[k])
            env = envelopes[safe]
            covered = np.isfinite(env) & (env > 0)
            valid &= ~seasonal[:, None] | covered
            x = np.where(seasonal[:, None] & covered, x / np.where(covered, env, 1.0), x)
            age = (starts[k][:, None] - starts[safe]) / s.interval_s
            usable = (valid.sum(axis=1) >= 2) & ~np.any(valid & (x <= 0), axis=1)
            lx = np.log(np.where(valid & (x > 0), x, 1.0))
            w = np.where(valid, 2.0 ** (-np.maximum(age, 0.0) * s.interval_s / s.half_life_s), 0.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                slopes = (lx[:, pj] - lx[:, pi]) / (age[:, pi] - age[:, pj])
            pair_w = w[:, pi] * w[:, pj]
            slopes = np.where(pair_w > 0, slopes, np.inf)
            out[k] = np.where(usable, np.maximum(_row_weighted_quantiles(slopes, pair_w, 0.5), 0.0), 0.0)
        return out

    def _growth(self, starts: np.ndarray, stats: np.ndarray, envelopes: np.ndarray, k: int) -> float:
        """Log growth per interval of the statistics up to interval ``k``, if positive (else 0).

        A decay-weighted Theil-Sen slope: the weighted median of the pairwise slopes of
        ``log(stat)`` over intervals ``burn_in_intervals..k``, pair weight ``w_i * w_j`` with
        ``w = 2 ** (-age / half_life_s)`` (pairs older than ``TREND_HALF_LIVES`` half-lives weigh
        under 2**-16 and are left out).  Robust to a single burst; needs two intervals after the
        burn-in; only growth is projected, one interval ahead (a falling series is followed by the
        level's own decay).  Once a seasonal profile covers interval ``k`` the slope is that of
        ``stat / envelope`` over the intervals the profile covers: growth the season does not
        explain (a Monday-morning step is the season's, not a trend)."""
        s = self.settings
        if not s.trend:
            return 0.0
        first = max(s.burn_in_intervals, int(np.searchsorted(starts, starts[k] - TREND_HALF_LIVES * s.half_life_s)))
        x = stats[first:k + 1]
        age = (starts[k] - starts[first:k + 1]) / s.interval_s
        if np.isfinite(envelopes[k]):
            env = envelopes[first:k + 1]
            covered = np.isfinite(env) & (env > 0)
            x, age = x[covered] / env[covered], age[covered]
        if x.size < 2 or np.any(x <= 0):
            return 0.0
        i, j = _pairs(x.size)
        lx = np.log(x)
        slopes = (lx[j] - lx[i]) / (age[i] - age[j])
        w = 2.0 ** (-age * s.interval_s / s.half_life_s)
        return max(_weighted_quantile(slopes, w[i] * w[j], 0.5), 0.0)

    def recommend(self, series: UsageSeries, previous: Recommendation | None = None,
                  prior: FleetPrior | None = None) -> Recommendation:
        """The documented steps: replay the level rule; the level for the coming interval (seasonal
        envelope, growth trend); the margin (the container's own replayed rises blended with the fleet
        prior); the OOM / overrun bump; the hysteresis; the bounds and the evidence."""
        s = self.settings
        self._require(series, s.min_samples)
        replay = self._replay(series)
        notes: list[str] = []
        level = self._coming_level(replay, notes)
        margin, fleet_share = self._margin(series, replay, prior, notes)
        target = self._bumped(series, previous, level * (1.0 + margin), notes)
        target = max(self._hysteresis(previous, target, notes), self._minimum(series))
        if not np.isfinite(target):
            raise NotEnoughData(f"effopt: {series.workload}/{series.container} {series.resource}: no finite target")
        c = vpa_confidence_days(series.timestamps)
        cap = options_for(series.unit).max_value
        upper = min(target * (1.0 + 1.0 / c), cap) if c > 0 else cap
        # VPA's confidence in the history, scaled by the share of the margin the container's own history supplies
        return self._result(series, target, min(level, target), upper, confidence_score(c) * (1.0 - fleet_share),
                            self._evidence(series, replay, notes, fleet_share))

    def _coming_level(self, replay: _Replay, notes: list[str]) -> float:
        """Step 2: the level known now, raised to the coming interval's seasonal envelope."""
        level = float(replay.levels[-1])
        seasonal = float(replay.envelopes[-1])
        if np.isfinite(seasonal) and seasonal > level:
            period = float(replay.periods[-1])
            cycle = {WEEK: "week", DAY: "day"}.get(period, f"{period / HOUR:g}-hour cycle")
            notes.append(f"seasonal peak {seasonal:g} of the same hour of the {cycle} in earlier cycles "
                         f"raises the level")
            level = seasonal
        growth = self._growth(replay.starts, replay.stats, replay.envelopes, replay.stats.size - 1)
        if growth > 0:
            notes.append(f"level includes a growth trend of {np.expm1(growth):.1%} per interval")
        return level

    def _own_ratios(self, replay: _Replay) -> tuple[np.ndarray, np.ndarray]:
        """(start times, ratios) of the container's own replayed rises after the burn-in (the first ratios are
        taken against a level of a single interval's peak: they measure the start-up, not the container's
        surprises); intervals after a level of 0 have no ratio, as in the fleet prior."""
        burn = min(self.settings.burn_in_intervals, replay.stats.size - 1)
        basis = self._basis(replay.levels, replay.envelopes)[burn:]
        ok = basis > 0
        return replay.starts[1 + burn:][ok], replay.stats[1 + burn:][ok] / basis[ok]

    def _margin(self, series: UsageSeries, replay: _Replay, prior: FleetPrior | None,
                notes: list[str]) -> tuple[float, float]:
        """Step 3: (the learned margin, the share of it the prior supplies): the container's own ``quantile``
        of its rises blended with the prior margin of containers of its size (:meth:`prior_margin`) weighted
        ``prior_weight_intervals`` intervals, so the prior governs the first hours and fades as the
        container's own history grows."""
        s = self.settings
        starts, ratios = self._own_ratios(replay)
        size = float(replay.stats.max()) if s.localize_prior else None
        spread = float(replay.spreads[-1]) if s.localize_prior and s.localize_by_spread else None
        fleet, prior_note = self.prior_margin(series.resource, prior, size, spread)
        notes.append(prior_note)
        share = s.prior_weight_intervals / (ratios.size + s.prior_weight_intervals) if (
            ratios.size + s.prior_weight_intervals) > 0 else 1.0
        if ratios.size:
            w = 2.0 ** ((starts - replay.starts[-1]) / s.half_life_s)
            learned = _weighted_quantile(ratios, w, self.quantile) - 1.0
            margin = learned * (1.0 - share) + fleet * share
        else:
            learned, margin, share = float("nan"), fleet, 1.0
        margin = max(margin, s.min_margin)
        burn = min(s.burn_in_intervals, replay.stats.size - 1)
        notes.append(f"margin {margin:.3f} (learned {learned:.3f} from {ratios.size} interval(s) after "
                     f"{burn} start-up interval(s))")
        source = "the fleet prior" if prior_note.startswith("fleet") else "the fixed prior margin"
        if share > 0.5:
            notes.append(f"rests mostly on {source}: it supplies {share:.0%} of the margin (the container's own "
                         f"history {ratios.size} replayed interval(s), the prior counts as "
                         f"{s.prior_weight_intervals:g})")
        return margin, share

    def _bumped(self, series: UsageSeries, previous: Recommendation | None, target: float,
                notes: list[str]) -> float:
        """Step 4: after an OOM kill, or usage above the previous target, at least VPA's OOM bump of the
        usage seen since (:func:`oom_bump`)."""
        ts, vs = series.timestamps, series.values
        bump_from = None
        if series.oom_kills.size:
            bump_from = float(series.oom_kills[-1])
            notes.append(f"{series.oom_kills.size} OOM kill(s)")
        if previous is not None and previous.evidence.window_end is not None:
            since = vs[ts > previous.evidence.window_end]
            if since.size and since.max() > previous.target:
                bump_from = previous.evidence.window_end
                notes.append(f"usage {since.max():g} overran the previous target {previous.target:g}")
        if bump_from is None:
            return target
        seen = float(vs[ts >= bump_from].max()) if np.any(ts >= bump_from) else float(vs.max())
        used = max(seen, previous.target if previous is not None else 0.0, series.request or 0.0)
        s = self.settings
        return max(target, oom_bump(used, s.bump_min_bytes if series.unit == "bytes" else 0.0, s.bump_ratio))

    def _hysteresis(self, previous: Recommendation | None, target: float, notes: list[str]) -> float:
        """Step 5: keep a slightly higher previous target; come down from a higher one gradually."""
        s = self.settings
        if previous is None or target >= previous.target:
            return target
        if previous.target <= target / (1.0 - s.hysteresis):
            notes.append(f"kept the previous target (change < {s.hysteresis:.0%})")
            return previous.target
        if target < previous.target * (1.0 - s.max_decrease):
            notes.append(f"lowered by at most {s.max_decrease:.0%} per decision")
            return previous.target * (1.0 - s.max_decrease)
        return target

    def _evidence(self, series: UsageSeries, replay: _Replay, notes: list[str], fleet_share: float) -> Evidence:
        s = self.settings
        peak_like = series.resource in ("memory", "gpu_memory")
        stat = "peaks" if peak_like else f"p{s.cpu_percentile * 100:g}s"
        method = (f"decaying p{s.level_percentile * 100:g} of {replay.stats.size} {s.interval_s / HOUR:g} h {stat}"
                  f"{' x growth trend' if s.trend else ''} + learned margin")
        ts = series.timestamps
        return Evidence(int(series.values.size), float(ts[0]), float(ts[-1]), s.level_percentile, method,
                        tuple(notes), fleet_weight=fleet_share)

    def _minimum(self, series: UsageSeries) -> float:
        if series.unit == "cores":
            return self.settings.min_cpu_cores
        if series.unit == "bytes" and series.resource == "memory":
            return self.settings.min_memory_bytes
        return 0.0
