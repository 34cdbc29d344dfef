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

Fleet calibration: a recommender with a ``calibrate(series)`` method (effopt's
empirical-Bayes margin prior) is calibrated on a grid every ``step_s`` from the
earliest sample of all containers, each time on *every* container cut strictly
before the grid time (``UsageSeries.before``); a decision at ``t`` uses the
newest calibration made at a grid time ``<= t``.  A calibration therefore
never sees a sample at or after the decision time, by construction (the
scoring is unchanged).

A container-window is scored only when every recommender compared produced a
recommendation for it (all are scored on the same samples); windows skipped
because one of them lacked data are counted in ``skipped_windows``.  The
``deployed`` baseline scores the series' own limit (or request for CPU) where
the source knows it: in ``pod_memory_util`` usage is a fraction of the
deployed limit, so the deployed limit is 1.0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from effopt.metrics.series import UsageSeries
from effopt.rightsizing.base import NotEnoughData, Recommendation, Recommender


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


@dataclass(frozen=True)
class BacktestResult:
    metric: str
    step_s: float
    warmup_s: float
    containers: int
    recommenders: dict[str, Score]
    deployed: Score | None
    skipped_windows: int

    def as_json(self) -> dict[str, object]:
        """The object ``rightsize backtest --json`` prints (keys read by other tools)."""
        def short(s: Score) -> dict[str, float | int]:
            return {k: v for k, v in s.as_dict().items() if k in ("mean_slack", "overrun_events",
                                                                    "overrun_fraction", "changes")}

        return {"metric": self.metric, "recommenders": {n: short(s) for n, s in self.recommenders.items()},
                "deployed": None if self.deployed is None else short(self.deployed)}


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


def _deployed_value(series: UsageSeries) -> float | None:
    return series.request if series.resource in ("cpu", "gpu_util") else series.limit


def backtest(
    series: Sequence[UsageSeries],
    recommenders: Mapping[str, Recommender],
    *,
    step_s: float = 3600.0,
    warmup_s: float = 6 * 3600.0,
    metric: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_window: Callable[[UsageSeries, float, Mapping[str, Recommendation], np.ndarray], None] | None = None,
) -> BacktestResult:
    """Score ``recommenders`` (name -> strategy) on ``series``; see the module docstring for the rules.

    ``on_window(series, t, recommendations, usage)`` is called for every scored container-window
    (decision time ``t``, the recommendations scored, the usage samples of ``[t, t + step)``), for
    analyses the totals do not show (e.g. slack by the history a recommender had).
    """
    if step_s <= 0 or warmup_s < 0:
        raise ValueError(f"step must be > 0 and warmup >= 0 (got step {step_s}, warmup {warmup_s})")
    if not recommenders:
        raise ValueError("no recommenders to backtest")
    kinds = {s.resource for s in series}
    if len(kinds) > 1:
        raise ValueError(f"backtest one resource kind at a time, got {', '.join(sorted(kinds))}")
    # Fleet calibration (optional, for recommenders with ``calibrate``): on a grid every ``step_s`` from the
    # earliest sample, each recommender calibrates on all series cut strictly before the grid time; a decision
    # at ``t`` uses the newest calibration made at a grid time <= t, so it rests only on data before t.
    starts = [float(s.timestamps[0]) for s in series if s.values.size]
    origin = min(starts) if starts else 0.0
    calibrated = {name: rec for name, rec in recommenders.items() if callable(getattr(rec, "calibrate", None))}
    priors: dict[str, dict[int, object]] = {name: {} for name in calibrated}

    def use_prior(name: str, t: float) -> None:
        g = int(np.floor((t - origin) / step_s))
        while origin + g * step_s > t:  # never a cut after t, whatever the rounding
            g -= 1
        if g not in priors[name]:
            cut = origin + g * step_s
            priors[name][g] = calibrated[name].calibrate([x.before(cut) for x in series])  # type: ignore[attr-defined]
        calibrated[name].prior = priors[name][g]  # type: ignore[attr-defined]  # the calibration made at cut <= t

    tallies = {name: _Tally() for name in recommenders}
    deployed = _Tally()
    has_deployed = False
    skipped = 0
    for n, s in enumerate(series):
        if s.values.size:
            ts, vs = s.timestamps, s.values
            previous: dict[str, Recommendation | None] = dict.fromkeys(recommenders)
            dep = _deployed_value(s)
            t = float(ts[0]) + warmup_s
            while t <= ts[-1]:
                lo = int(np.searchsorted(ts, t, side="left"))
                hi = int(np.searchsorted(ts, t + step_s, side="left"))
                if hi > lo:
                    history = s.before(t)
                    recs: dict[str, Recommendation] = {}
                    for name, rec in recommenders.items():
                        if name in calibrated:
                            use_prior(name, t)
                        try:
                            recs[name] = rec.recommend(history, previous[name])
                        except NotEnoughData:
                            break
                    if len(recs) < len(recommenders):
                        skipped += 1
                    else:
                        usage = vs[lo:hi]
                        if on_window is not None:
                            on_window(s, t, recs, usage)
                        for name, r in recs.items():
                            tallies[name].add(r.target, usage)
                            before = previous[name]
                            if before is not None and not np.isclose(before.target, r.target, rtol=1e-9, atol=0):
                                tallies[name].changes += 1
                            previous[name] = r
                        if dep is not None:
                            deployed.add(dep, usage)
                            has_deployed = True
                t += step_s
        if progress is not None:
            progress(n + 1, len(series))
    kind = metric or (next(iter(kinds)) if kinds else "unknown")
    return BacktestResult(kind, step_s, warmup_s, len(series), {n: t.score() for n, t in tallies.items()},
                          deployed.score() if has_deployed else None, skipped)
