"""Interruption risk: from the Spot Instance Advisor band, and from observed availability.

**Advisor band -> hourly hazard.**  The advisor gives, per (region, type), the
band of the share ``f`` of spot instances interrupted in a month (<5%, 5-10%,
10-15%, 15-20%, >20%).  With a constant hazard ``lambda`` an instance survives a
month (730 h) with probability ``exp(-730 lambda)``, so

    lambda = -ln(1 - f) / 730 h,   f = the band's midpoint (2.5%, 7.5%, 12.5%, 17.5%; 60% for >20%,
                                    the midpoint of [20%, 100%])

and the expected number of interruptions in ``T`` hours of running is
``lambda * T``.

**Observed availability.**  Where a series of availability is known (a spot
trace, or effopt's own launch records), :func:`observe_zones` measures per
zone the available fraction, the preemptions per available hour and the run
lengths of available and unavailable periods, and
:func:`fit_availability_model` fits the semi-Markov model the ``effopt``
policy plans with (:class:`AvailabilityModel`): availability periods and gaps
with a hazard per age bucket (ages 1, 2-3, 4-7, ... 64+ ticks), so that a
period that has lasted long is expected to last longer when the data says so
(the traces' periods are heavy-tailed: median ~0.5 h, mean 1-4 h).  With
several zones the model is that of the *instance* a job would hold: it follows
the zone rule of :meth:`AvailabilityModel.pick` (the available zone with the
largest expected saving, price gap x expected remaining availability) through
the history; an instance run ends when its zone drops, and then with
probability ``move_prob`` another zone has spot (a move at the cost of a
changeover), else the job faces a gap of every zone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from effopt.spot.catalog import AdvisorBand
from effopt.units import HOURS_PER_MONTH

#: Lower edges (in ticks) of the age buckets of the semi-Markov model.
AGE_EDGES = (1, 2, 4, 8, 16, 32, 64)
_BAND_MIDPOINTS = (0.025, 0.075, 0.125, 0.175, 0.60)
#: Pseudo-runs with the overall mean that shrink a mean residual life measured on few long runs.
_PSEUDO_RUNS = 3.0


@dataclass(frozen=True)
class Hazard:
    """An hourly interruption hazard and where it comes from."""

    per_hour: float
    source: str  # "advisor band >20%", "observed us-east-1a (1092 h)", ...
    monthly_share: float | None = None

    def expected_interruptions(self, hours: float) -> float:
        return self.per_hour * hours

    def as_dict(self) -> dict[str, object]:
        return {"per_hour": self.per_hour, "source": self.source, "monthly_share": self.monthly_share}


def advisor_hazard(band: AdvisorBand) -> Hazard:
    """The module docstring's formula: ``-ln(1 - f) / 730`` with ``f`` the band's midpoint."""
    f = _BAND_MIDPOINTS[band.index]
    return Hazard(-math.log(1.0 - f) / HOURS_PER_MONTH, f"advisor band {band.label} (f = {f:.1%} a month)", f)


def runs_of(available: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths (ticks) and their state (True = available) of a boolean series."""
    a = np.asarray(available, dtype=bool)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    bounds = np.concatenate(([0], np.flatnonzero(a[1:] != a[:-1]) + 1, [a.size]))
    return np.diff(bounds), a[bounds[:-1]]


def _complete(runs: np.ndarray, states: np.ndarray, want: bool) -> np.ndarray:
    """Runs of one state, without the first and last run of the series (cut by its ends)."""
    inner = np.ones(runs.size, dtype=bool)
    if runs.size:
        inner[0] = inner[-1] = False
    return runs[(states == want) & inner]


def mean_residual_table(runs: np.ndarray, max_age: int) -> np.ndarray | None:
    """Mean remaining length (ticks) of a run that has lasted ``a`` ticks, ``a = 0..max_age``.

    Empirical over the runs longer than ``a``, shrunk toward the overall mean
    by :data:`_PSEUDO_RUNS` pseudo-runs (so that a few long runs do not decide it).
    """
    r = np.sort(np.asarray(runs, dtype=float))
    if r.size == 0:
        return None
    mean = float(r.mean())
    tail_sum = np.concatenate((np.cumsum(r[::-1])[::-1], [0.0]))
    ages = np.arange(max_age + 1)
    idx = np.searchsorted(r, ages, side="right")
    n_longer = r.size - idx
    excess = tail_sum[idx] - ages * n_longer
    return (excess + _PSEUDO_RUNS * mean) / (n_longer + _PSEUDO_RUNS)


@dataclass(frozen=True)
class ZoneAvailability:
    """What an availability series says about one zone."""

    zone: str
    tick_h: float
    hours: float
    available_fraction: float
    preemptions: int
    preemptions_per_available_hour: float | None
    mean_available_h: float | None
    mean_unavailable_h: float | None
    up_runs: np.ndarray = field(repr=False)
    down_runs: np.ndarray = field(repr=False)

    def hazard(self) -> Hazard | None:
        if self.preemptions_per_available_hour is None:
            return None
        return Hazard(self.preemptions_per_available_hour, f"observed {self.zone} ({self.hours:.0f} h)")

    def as_dict(self) -> dict[str, object]:
        return {"zone": self.zone, "hours": round(self.hours, 3),
                "available_fraction": round(self.available_fraction, 6), "preemptions": self.preemptions,
                "preemptions_per_available_hour": _round(self.preemptions_per_available_hour),
                "mean_available_h": _round(self.mean_available_h),
                "mean_unavailable_h": _round(self.mean_unavailable_h)}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 6)


def observe_zones(history: np.ndarray, tick_h: float, zones: Sequence[str] | None = None) -> list[ZoneAvailability]:
    """Per-zone availability statistics of a (zones x ticks) boolean history."""
    h = np.atleast_2d(np.asarray(history, dtype=bool))
    names = list(zones) if zones is not None else [f"zone{i}" for i in range(h.shape[0])]
    out = []
    for name, a in zip(names, h, strict=True):
        runs, states = runs_of(a)
        up_ticks = int(a.sum())
        drops = int(np.count_nonzero(a[:-1] & ~a[1:])) if a.size > 1 else 0
        ups, downs = _complete(runs, states, True), _complete(runs, states, False)
        out.append(ZoneAvailability(
            name, tick_h, a.size * tick_h, up_ticks / a.size if a.size else 0.0, drops,
            drops / (up_ticks * tick_h) if up_ticks else None,
            float(ups.mean()) * tick_h if ups.size else None, float(downs.mean()) * tick_h if downs.size else None,
            ups, downs))
    return out


def _age_hazards(runs: np.ndarray) -> np.ndarray:
    """Discrete hazard per age bucket: (runs ending in the bucket + 0.5) / (ticks lived in it + 1)."""
    r = np.asarray(runs, dtype=np.int64)
    edges = np.array(AGE_EDGES)
    highs = np.append(edges[1:], np.iinfo(np.int64).max // 4)
    hz = np.empty(len(edges))
    for i, (lo, hi) in enumerate(zip(edges, highs, strict=True)):
        ends = np.count_nonzero((r >= lo) & (r < hi))
        exposure = np.clip(np.minimum(r, hi - 1) - lo + 1, 0, None).sum()
        hz[i] = (ends + 0.5) / (exposure + 1.0)
    return np.clip(hz, 1e-4, 0.999)


def age_bucket(age_ticks: int) -> int:
    """Index of the age bucket of a run that has lasted ``age_ticks`` (>= 1) ticks."""
    b = 0
    for i, edge in enumerate(AGE_EDGES):
        if age_ticks >= edge:
            b = i
    return b


@dataclass
class AvailabilityModel:
    """The semi-Markov model of the instance a job would hold (module docstring).

    States ``0..B-1`` are gap ages, ``B..2B-1`` availability ages (bucketed
    by :data:`AGE_EDGES`).  ``hazard_up[b]`` is the chance per tick that the
    held instance's zone drops at age bucket ``b``; ``hazard_down[b]`` that a
    gap of every zone ends; ``move_prob`` that when the zone drops another zone
    has spot.
    """

    tick_h: float
    zones: tuple[str, ...]
    hazard_up: np.ndarray
    hazard_down: np.ndarray
    move_prob: float
    gains: tuple[float, ...]  # USD/h saved on spot in each zone (on-demand - spot price)
    residual_up: list[np.ndarray | None] = field(repr=False)  # per zone, mean residual availability (ticks)
    history_h: float = 0.0
    instance_runs: int = 0
    gaps: int = 0

    @property
    def buckets(self) -> int:
        return len(AGE_EDGES)

    def expected_remaining_h(self, zone: int, age_ticks: int) -> float:
        t = self.residual_up[zone]
        if t is None:
            return self.tick_h
        return float(t[min(age_ticks, t.size - 1)]) * self.tick_h

    def pick(self, available: Sequence[bool], ages: Sequence[int]) -> int | None:
        """The available zone with the largest expected saving (price gap x expected remaining availability)."""
        best, best_v = None, -math.inf
        for z, a in enumerate(available):
            if a:
                v = self.gains[z] * self.expected_remaining_h(z, int(ages[z]))
                if v > best_v:
                    best, best_v = z, v
        return best

    def matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """(continue, end) transition matrices over the 2B states; their sum is stochastic."""
        b = self.buckets
        x = 2 * b
        cont = np.zeros((x, x))
        end = np.zeros((x, x))
        edges = np.array(AGE_EDGES)
        widths = np.append(edges[1:] - edges[:-1], 0)
        for i in range(b):
            advance = 1.0 / widths[i] if i < b - 1 else 0.0
            for base, hz in ((0, self.hazard_down), (b, self.hazard_up)):
                s = base + i
                keep = 1.0 - hz[i]
                if i < b - 1:
                    cont[s, s + 1] += keep * advance
                    cont[s, s] += keep * (1.0 - advance)
                else:
                    cont[s, s] += keep
            end[i, b] += self.hazard_down[i]  # a gap ends: some zone is available (age 1)
            end[b + i, b] += self.hazard_up[i] * self.move_prob
            end[b + i, 0] += self.hazard_up[i] * (1.0 - self.move_prob)
        return cont, end

    def fingerprint(self) -> tuple:
        return (self.tick_h, self.zones, tuple(np.round(self.hazard_up, 9)), tuple(np.round(self.hazard_down, 9)),
                round(self.move_prob, 9), self.gains)

    def as_dict(self) -> dict[str, object]:
        return {"zones": list(self.zones), "history_h": round(self.history_h, 3), "age_edges_ticks": list(AGE_EDGES),
                "hazard_up_per_tick": [round(float(v), 6) for v in self.hazard_up],
                "hazard_down_per_tick": [round(float(v), 6) for v in self.hazard_down],
                "move_prob": round(self.move_prob, 6), "instance_runs": self.instance_runs, "gaps": self.gaps}


def fit_availability_model(history: np.ndarray, tick_h: float, gains: Sequence[float],
                           zones: Sequence[str] | None = None) -> AvailabilityModel:
    """Fit :class:`AvailabilityModel` on a (zones x ticks) boolean history (see the module docstring)."""
    h = np.atleast_2d(np.asarray(history, dtype=bool))
    n_zones, ticks = h.shape
    names = tuple(zones) if zones is not None else tuple(f"zone{i}" for i in range(n_zones))
    max_age = 4 * ticks + 1
    residual = []
    for z in range(n_zones):
        runs, states = runs_of(h[z])
        ups = _complete(runs, states, True)
        residual.append(mean_residual_table(ups, min(max_age, 100_000)) if ups.size else None)
    model = AvailabilityModel(tick_h, names, np.zeros(len(AGE_EDGES)), np.zeros(len(AGE_EDGES)), 0.0,
                              tuple(float(g) for g in gains), residual, ticks * tick_h)
    # Replay the zone rule through the history: instance runs, moves, gaps of every zone.
    ages = np.zeros(n_zones, dtype=np.int64)
    current: int | None = None
    run = gap = 0
    inst_runs: list[int] = []
    gaps: list[int] = []
    ends = moves = 0
    started = False  # the first (cut) run or gap is not counted
    for t in range(ticks):
        col = h[:, t]
        ages = np.where(col, ages + 1, 0)
        if current is not None and col[current]:
            run += 1
            continue
        if current is not None:
            if started:
                inst_runs.append(run)
                ends += 1
                moves += bool(col.any())
            started = True
            current = None
        if col.any():
            if gap:
                if started:
                    gaps.append(gap)
                started = True
                gap = 0
            current = model.pick(col, ages)
            run = 1
        else:
            gap += 1
    model.hazard_up = _age_hazards(np.array(inst_runs, dtype=np.int64))
    model.hazard_down = _age_hazards(np.array(gaps, dtype=np.int64))
    model.move_prob = (moves + 0.5) / (ends + 1.0)
    model.instance_runs, model.gaps = len(inst_runs), len(gaps)
    return model
