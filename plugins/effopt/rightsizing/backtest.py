"""Backtest: replay history and score what each recommender would have set.

For every container, decision times start ``warmup_s`` after its first
sample and follow every ``step_s`` while it has samples.  At a decision time
``t`` each recommender sees only the samples before ``t`` and its last
recommendation (for hysteresis); its target is the request (for memory,
request = limit) used for the samples in ``[t, t + step)``.

Scores, per recommender, over all scored samples of all containers:

* ``mean_slack``: mean over samples of ``(rec - usage) / rec`` (a sample with
  ``rec == 0`` counts as 0 slack);
* ``overrun_events``: container-windows in which some usage exceeded ``rec``;
* ``overrun_fraction``: overrun events / scored container-windows;
* ``changes``: decisions whose target differs from the container's previous one.

The reference is the *hindsight limit*: each container held at a constant
limit equal to its peak over all its scored windows (its scored future, so
zero overruns), scored on the same samples.  A recommender's *gap closed* is
``(VPA's slack - its slack) / (VPA's slack - the hindsight limit's slack)``:
0 is no better than VPA, 1 matches a limit that knew the future.  It is
undefined (None) when VPA was not scored or is no looser than the hindsight
limit (no gap to close).  The same figures are kept by *hours of history*:
the whole hours between a container's first sample and the decision time
(the hindsight limit stays the container's peak over all its scored windows).

Fleet calibration: every recommender's :meth:`~Recommender.calibrate` (a
no-op returning None for VPA and KRR; effopt's fleet prior) runs on a grid
every ``step_s`` from the earliest sample of all containers, each time on the
containers cut strictly before the grid time (``UsageSeries.before``); a
decision at ``t`` is passed the prior made at the newest grid time ``<= t``.
A prior therefore never holds a sample at or after the decision time, by
construction.  With ``folds > 1`` the evaluation also *leaves containers
out*: containers are split into ``folds`` groups by a hash of their
identity (:func:`fold_of`), and a decision for a container of group ``k``
is passed a prior calibrated only on the containers of the other groups, so
nothing of the container itself (neither its past nor its future) shapes
its prior; with ``folds == 1`` (in-sample) the prior pools every container,
the decided one's own past included.

A container-window is scored only when every recommender compared produced a
recommendation for it (all are scored on the same samples); windows skipped
because one of them lacked data are counted in ``skipped_windows``.  The
``deployed`` baseline scores the series' own limit (or request for CPU) where
the source knows it: in ``pod_memory_util`` usage is a fraction of the
deployed limit, so the deployed limit is 1.0.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from effopt.metrics.series import UsageSeries
from effopt.rightsizing.base import NotEnoughData, Recommendation, Recommender
from effopt.units import HOUR

#: The recommender the gap closed is measured from.
BASELINE = "vpa"


@dataclass(frozen=True)
class Score:
    mean_slack: float
    overrun_events: int
    overrun_fraction: float
    changes: int
    windows: int
    samples: int

    def as_dict(self) -> dict[str, float | int]:
        return {"mean_slack": self.mean_slack, "overrun_events": self.overrun_events,
                "overrun_fraction": self.overrun_fraction, "changes": self.changes,
                "windows": self.windows, "samples": self.samples}


def gap_closed(slack: float, baseline_slack: float, hindsight_slack: float) -> float | None:
    """``(baseline - slack) / (baseline - hindsight)``; None when undefined (no gap, or a value not finite)."""
    gap = baseline_slack - hindsight_slack
    if not (math.isfinite(slack) and math.isfinite(gap)) or gap <= 0:
        return None
    return (baseline_slack - slack) / gap


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@dataclass(frozen=True)
class HistoryBand:
    """The scores of the decisions made with ``hours`` (whole) hours of the container's history."""

    hours: int
    recommenders: dict[str, Score]
    hindsight: Score

    @property
    def windows(self) -> int:
        return self.hindsight.windows

    def gap_closed(self, name: str) -> float | None:
        return _gap(self.recommenders, name, self.hindsight)

    def as_json(self) -> dict[str, object]:
        return {"hours": self.hours, "windows": self.windows,
                "hindsight": {"mean_slack": _finite(self.hindsight.mean_slack)},
                "recommenders": {n: {"mean_slack": _finite(s.mean_slack), "overrun_events": s.overrun_events,
                                     "gap_closed": self.gap_closed(n)} for n, s in self.recommenders.items()}}


def _gap(scores: Mapping[str, Score], name: str, hindsight: Score | None) -> float | None:
    base = scores.get(BASELINE)
    if base is None or hindsight is None:
        return None
    return gap_closed(scores[name].mean_slack, base.mean_slack, hindsight.mean_slack)


@dataclass(frozen=True)
class BacktestResult:
    metric: str
    step_s: float
    warmup_s: float
    containers: int
    recommenders: dict[str, Score]
    deployed: Score | None
    skipped_windows: int
    hindsight: Score | None = None
    by_history: tuple[HistoryBand, ...] = ()
    folds: int = 1

    def gap_closed(self, name: str) -> float | None:
        """Share of VPA's gap to the hindsight limit that recommender ``name`` closed (None: undefined)."""
        return _gap(self.recommenders, name, self.hindsight)

    def as_json(self, by_history: bool = False) -> dict[str, object]:
        """The object ``rightsize backtest --json`` prints (keys read by other tools; no NaN: null)."""
        def short(s: Score) -> dict[str, float | int | None]:
            return {"mean_slack": _finite(s.mean_slack), "overrun_events": s.overrun_events,
                    "overrun_fraction": _finite(s.overrun_fraction), "changes": s.changes}

        out: dict[str, object] = {
            "metric": self.metric,
            "recommenders": {n: {**short(s), "gap_closed": self.gap_closed(n)} for n, s in self.recommenders.items()},
            "deployed": None if self.deployed is None else short(self.deployed),
            "hindsight": None if self.hindsight is None else {"mean_slack": _finite(self.hindsight.mean_slack)},
        }
        if by_history:
            out["by_history"] = [band.as_json() for band in self.by_history]
        return out


class _Tally:
    def __init__(self) -> None:
        self.slack_sum = 0.0
        self.samples = 0
        self.overruns = 0
        self.windows = 0
        self.changes = 0

    def add(self, rec: float, usage: np.ndarray) -> None:
        if rec > 0:
            self.slack_sum += float(np.sum((rec - usage) / rec))
        self.samples += int(usage.size)
        self.windows += 1
        self.overruns += int(bool(np.any(usage > rec)))

    def score(self) -> Score:
        return Score(self.slack_sum / self.samples if self.samples else float("nan"), self.overruns,
                     self.overruns / self.windows if self.windows else float("nan"), self.changes,
                     self.windows, self.samples)


@dataclass
class _Tallies:
    """Tallies of the recommenders, the deployed limit and the hindsight limit, overall and by history."""

    names: tuple[str, ...]
    overall: dict[str, _Tally] = field(default_factory=dict)
    bands: dict[int, dict[str, _Tally]] = field(default_factory=dict)
    deployed: _Tally = field(default_factory=_Tally)
    has_deployed: bool = False

    def __post_init__(self) -> None:
        self.overall = {n: _Tally() for n in (*self.names, "hindsight")}

    def add(self, name: str, band: int, rec: float, usage: np.ndarray, changed: bool) -> None:
        row = self.bands.setdefault(band, {n: _Tally() for n in (*self.names, "hindsight")})
        for tally in (self.overall[name], row[name]):
            tally.add(rec, usage)
            tally.changes += int(changed)

    def result(self, metric: str, step_s: float, warmup_s: float, containers: int, skipped: int,
               folds: int) -> BacktestResult:
        scored = self.overall["hindsight"].windows > 0
        bands = tuple(HistoryBand(h, {n: row[n].score() for n in self.names}, row["hindsight"].score())
                      for h, row in sorted(self.bands.items()))
        return BacktestResult(metric, step_s, warmup_s, containers, {n: self.overall[n].score() for n in self.names},
                              self.deployed.score() if self.has_deployed else None, skipped,
                              self.overall["hindsight"].score() if scored else None, bands, folds)


def fold_of(series: UsageSeries, folds: int) -> int:
    """The leave-out group (0..folds-1) of ``series``: a stable hash of its workload and container."""
    if folds <= 1:
        return 0
    return zlib.crc32(f"{series.workload}\0{series.container}".encode()) % folds


class _Priors:
    """Fleet priors on a grid every ``step_s`` from the earliest sample, per recommender and leave-out group:
    the prior for a decision at ``t`` is calibrated on the containers (of the other groups, with folds) cut
    at the newest grid time ``<= t``."""

    def __init__(self, series: Sequence[UsageSeries], recommenders: Mapping[str, Recommender[Any]], step_s: float,
                 folds: int) -> None:
        self.series = series
        self.recommenders = recommenders
        self.step_s = step_s
        self.folds = folds
        self.groups = [fold_of(s, folds) for s in series]
        starts = [float(s.timestamps[0]) for s in series if s.values.size]
        self.origin = min(starts) if starts else 0.0
        self._made: dict[tuple[str, int, int], object] = {}
        self._cuts: dict[tuple[int, int], list[UsageSeries]] = {}

    def cut(self, t: float) -> float:
        """The newest grid time ``<= t``."""
        g = int(np.floor((t - self.origin) / self.step_s))
        while self.origin + g * self.step_s > t:  # never a cut after t, whatever the rounding
            g -= 1
        return self.origin + g * self.step_s

    def fleet(self, group: int, cut: float) -> list[UsageSeries]:
        """The containers a prior for ``group`` may see at grid time ``cut``, cut strictly before it."""
        key = (group, round((cut - self.origin) / self.step_s))
        if key not in self._cuts:
            self._cuts[key] = [x.before(cut) for x, g in zip(self.series, self.groups, strict=True)
                               if self.folds <= 1 or g != group]
        return self._cuts[key]

    def prior(self, name: str, group: int, t: float) -> object:
        cut = self.cut(t)
        key = (name, group, round((cut - self.origin) / self.step_s))
        if key not in self._made:
            self._made[key] = self.recommenders[name].calibrate(self.fleet(group, cut))
        return self._made[key]


def _deployed_value(series: UsageSeries) -> float | None:
    return series.request if series.resource in ("cpu", "gpu_util") else series.limit


def _check(series: Sequence[UsageSeries], recommenders: Mapping[str, Recommender[Any]], step_s: float,
           warmup_s: float, folds: int) -> set[str]:
    if step_s <= 0 or warmup_s < 0:
        raise ValueError(f"step must be > 0 and warmup >= 0 (got step {step_s}, warmup {warmup_s})")
    if folds < 1:
        raise ValueError(f"folds must be >= 1 (1: in-sample), got {folds}")
    if not recommenders:
        raise ValueError("no recommenders to backtest")
    kinds = {s.resource for s in series}
    if len(kinds) > 1:
        raise ValueError(f"backtest one resource kind at a time, got {', '.join(sorted(kinds))}")
    return kinds


def _decide(recommenders: Mapping[str, Recommender[Any]], priors: _Priors, group: int, history: UsageSeries,
            t: float, previous: Mapping[str, Recommendation | None]) -> dict[str, Recommendation] | None:
    """Every recommender's recommendation at ``t`` (passed its prior when its calibration made one), or None
    when one of them lacked data."""
    recs: dict[str, Recommendation] = {}
    for name, rec in recommenders.items():
        prior = priors.prior(name, group, t)
        try:
            recs[name] = (rec.recommend(history, previous[name]) if prior is None
                          else rec.recommend(history, previous[name], prior))
        except NotEnoughData:
            return None
    return recs


def backtest(
    series: Sequence[UsageSeries],
    recommenders: Mapping[str, Recommender[Any]],
    *,
    step_s: float = HOUR,
    warmup_s: float = 6 * HOUR,
    metric: str | None = None,
    folds: int = 1,
    progress: Callable[[int, int], None] | None = None,
    on_window: Callable[[UsageSeries, float, Mapping[str, Recommendation], np.ndarray], None] | None = None,
) -> BacktestResult:
    """Score ``recommenders`` (name -> strategy) on ``series``; see the module docstring for the rules.

    Steps: check the inputs; for every container, at every decision time, pass each recommender the history
    before it, its previous recommendation and its prior, and score the targets on the coming window; then
    score the hindsight limit on the container's scored windows.  ``folds > 1`` leaves containers out of
    their own priors.  ``on_window(series, t, recommendations, usage)`` is called for every scored
    container-window (decision time ``t``, the recommendations scored, the usage samples of
    ``[t, t + step)``), for analyses the totals do not show.
    """
    kinds = _check(series, recommenders, step_s, warmup_s, folds)
    priors = _Priors(series, recommenders, step_s, folds)
    tallies = _Tallies(tuple(recommenders))
    skipped = 0
    for n, s in enumerate(series):
        skipped += _replay_container(s, priors.groups[n], recommenders, priors, tallies, step_s, warmup_s, on_window)
        if progress is not None:
            progress(n + 1, len(series))
    kind = metric or (next(iter(kinds)) if kinds else "unknown")
    return tallies.result(kind, step_s, warmup_s, len(series), skipped, folds)


def _replay_container(s: UsageSeries, group: int, recommenders: Mapping[str, Recommender[Any]], priors: _Priors,
                      tallies: _Tallies, step_s: float, warmup_s: float,
                      on_window: Callable[..., None] | None) -> int:
    """Decide and score every window of one container; the number of windows skipped."""
    if not s.values.size:
        return 0
    ts, vs = s.timestamps, s.values
    previous: dict[str, Recommendation | None] = dict.fromkeys(recommenders)
    dep = _deployed_value(s)
    scored: list[tuple[int, np.ndarray]] = []
    skipped = 0
    t = float(ts[0]) + warmup_s
    while t <= ts[-1]:
        lo = int(np.searchsorted(ts, t, side="left"))
        hi = int(np.searchsorted(ts, t + step_s, side="left"))
        if hi > lo:
            recs = _decide(recommenders, priors, group, s.before(t), t, previous)
            if recs is None:
                skipped += 1
            else:
                usage = vs[lo:hi]
                band = int((t - float(ts[0])) // HOUR)
                if on_window is not None:
                    on_window(s, t, recs, usage)
                for name, r in recs.items():
                    before = previous[name]
                    changed = before is not None and not np.isclose(before.target, r.target, rtol=1e-9, atol=0)
                    tallies.add(name, band, r.target, usage, changed)
                    previous[name] = r
                if dep is not None:
                    tallies.deployed.add(dep, usage)
                    tallies.has_deployed = True
                scored.append((band, usage))
        t += step_s
    if scored:
        peak = max(float(u.max()) for _, u in scored)  # the hindsight limit: the peak of the scored future
        for band, usage in scored:
            tallies.add("hindsight", band, peak, usage, False)
    return skipped
