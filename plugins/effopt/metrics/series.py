"""Usage series, their data-quality reports and the metrics-source interface.

A :class:`UsageSeries` is one resource of one container of one workload:
timestamps (epoch seconds) and values as numpy arrays, sorted by time, with
NaN, negative values and duplicates already removed by :func:`clean_series`.
What was removed, and why, is kept in its :class:`QualityReport`: bad data is
reported, never silently turned into zeros, and a series without any usable
sample is still returned (empty, with the report saying so) instead of failing
the whole workload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol, runtime_checkable

import numpy as np

ResourceKind = Literal["cpu", "memory", "gpu_util", "gpu_memory"]
RESOURCES: tuple[ResourceKind, ...] = ("cpu", "memory", "gpu_util", "gpu_memory")

#: The unit of each resource kind as sources deliver it.  ``fraction`` (of the
#: deployed limit) is used by traces that only give relative usage.
UNITS: dict[ResourceKind, str] = {"cpu": "cores", "memory": "bytes", "gpu_util": "percent", "gpu_memory": "bytes"}

#: A gap longer than this many median sample intervals is reported as a gap.
GAP_FACTOR = 5.0
#: Timestamps a sample may have (epoch seconds): from 1970 to the end of year 9999, what dates can show.
TIMESTAMP_RANGE = (0.0, 253402300799.0)
#: A value above this is not a plausible measurement of the unit (e.g. 1 PB of memory, a million cores).
HUGE: dict[str, float] = {"cores": 1e5, "bytes": 1e15, "percent": 1e4, "fraction": 1e3}


def check_resource(resource: str) -> ResourceKind:
    if resource not in RESOURCES:
        raise ValueError(f"unknown resource kind {resource!r}; expected one of {', '.join(RESOURCES)}")
    return resource  # type: ignore[return-value]


@dataclass(frozen=True)
class QualityReport:
    """What :func:`clean_series` found in one raw series.

    ``samples_in`` raw points became ``samples`` usable ones; the other counters
    say where the rest went.  ``issues`` repeats the noteworthy findings as
    sentences for reports and logs; ``usable`` is false when nothing is left.
    """

    samples_in: int
    samples: int
    nan: int = 0
    negative: int = 0
    huge: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    counter_resets: int = 0
    gaps: int = 0
    largest_gap_s: float = 0.0
    median_interval_s: float = 0.0
    history_s: float = 0.0
    too_little_history: bool = False
    issues: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        return self.samples > 0

    def as_dict(self) -> dict[str, object]:
        return {
            "samples_in": self.samples_in,
            "samples": self.samples,
            "nan": self.nan,
            "negative": self.negative,
            "huge": self.huge,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "counter_resets": self.counter_resets,
            "gaps": self.gaps,
            "largest_gap_s": self.largest_gap_s,
            "median_interval_s": self.median_interval_s,
            "history_s": self.history_s,
            "too_little_history": self.too_little_history,
            "issues": list(self.issues),
        }


@dataclass(frozen=True)
class UsageSeries:
    """Usage of one resource of one container, cleaned, oldest sample first.

    ``request`` and ``limit`` are the container's current settings in the
    same unit when the source knows them; ``oom_kills`` are epoch seconds of
    OOM kills seen for this container (memory series only).
    """

    workload: str
    container: str
    resource: ResourceKind
    unit: str
    timestamps: np.ndarray
    values: np.ndarray
    quality: QualityReport
    request: float | None = None
    limit: float | None = None
    oom_kills: np.ndarray = field(default_factory=lambda: np.empty(0))
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.workload, self.container, self.resource)

    def __len__(self) -> int:
        return int(self.values.size)

    def before(self, t: float) -> UsageSeries:
        """The part of the series strictly before ``t`` (what a recommender may see at time ``t``).

        The quality report stays the one of the whole series.
        """
        n = int(np.searchsorted(self.timestamps, t, side="left"))
        oom = self.oom_kills[self.oom_kills < t] if self.oom_kills.size else self.oom_kills
        return UsageSeries(self.workload, self.container, self.resource, self.unit, self.timestamps[:n],
                           self.values[:n], self.quality, self.request, self.limit, oom, self.labels)


def clean_series(
    timestamps: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    *,
    unit: str,
    counter: bool = False,
    min_history_s: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, QualityReport]:
    """Sort, deduplicate and clean one raw series; report everything that was changed.

    NaN/inf, negative and implausibly huge values (see :data:`HUGE`) are
    dropped, never replaced.  Duplicate timestamps keep the last value.  With
    ``counter=True`` the values are a monotonically increasing counter (such as
    ``container_cpu_usage_seconds_total``): a decrease is counted as a counter
    reset and the counter continues from the new value, as Prometheus' rate()
    does.  ``min_history_s`` sets when ``too_little_history`` is raised.
    """
    ts = np.asarray(timestamps, dtype=float).ravel()
    vs = np.asarray(values, dtype=float).ravel()
    if ts.shape != vs.shape:
        raise ValueError(f"{ts.size} timestamps but {vs.size} values")
    n_in = int(vs.size)
    bad_ts, nan, negative, huge = _unusable(ts, vs, unit)
    keep = ~(nan | negative | huge)
    ts, vs, out_of_order = _sorted_by_time(ts[keep], vs[keep])
    ts, vs, duplicates = _last_of_each_timestamp(ts, vs)
    resets = 0
    if counter:
        vs, resets = _bridge_counter_resets(vs)
    median_dt, gaps, largest = _gaps(ts)
    history = float(ts[-1] - ts[0]) if ts.size > 1 else 0.0
    too_short = ts.size < 2 or history < min_history_s
    report = QualityReport(
        samples_in=n_in, samples=int(ts.size), nan=int(nan.sum()), negative=int(negative.sum()),
        huge=int(huge.sum()), duplicates=duplicates, out_of_order=out_of_order, counter_resets=resets, gaps=gaps,
        largest_gap_s=largest, median_interval_s=median_dt, history_s=history, too_little_history=bool(too_short),
    )
    return ts, vs, replace(report, issues=_issues(report, int(bad_ts.sum()), unit, min_history_s))


def _unusable(ts: np.ndarray, vs: np.ndarray, unit: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Masks of the samples to drop: (impossible timestamp; NaN/inf value or impossible timestamp; negative;
    implausibly large)."""
    bad_ts = ~np.isfinite(ts) | (ts < TIMESTAMP_RANGE[0]) | (ts > TIMESTAMP_RANGE[1])
    nan = ~np.isfinite(vs) | bad_ts
    negative = ~nan & (vs < 0)
    huge = ~nan & (vs > HUGE.get(unit, np.inf))
    return bad_ts, nan, negative, huge


def _sorted_by_time(ts: np.ndarray, vs: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The samples sorted by time (stable), and how many were out of order."""
    out_of_order = int(np.count_nonzero(np.diff(ts) < 0)) if ts.size > 1 else 0
    if out_of_order:
        order = np.argsort(ts, kind="stable")
        ts, vs = ts[order], vs[order]
    return ts, vs, out_of_order


def _last_of_each_timestamp(ts: np.ndarray, vs: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The last sample of each run of equal timestamps, and how many duplicates were dropped."""
    if ts.size <= 1:
        return ts, vs, 0
    last_of_run = np.append(np.diff(ts) != 0, True)
    return ts[last_of_run], vs[last_of_run], int(ts.size - last_of_run.sum())


def _bridge_counter_resets(vs: np.ndarray) -> tuple[np.ndarray, int]:
    """A counter's values with each reset (a decrease) bridged, and the number of resets."""
    if vs.size <= 1:
        return vs, 0
    drops = np.diff(vs) < 0
    resets = int(drops.sum())
    if resets:
        # After a reset the counter restarts near zero: carry the level it had reached.
        carry = np.concatenate([[0.0], np.cumsum(np.where(drops, vs[:-1], 0.0))])
        vs = vs + carry
    return vs, resets


def _gaps(ts: np.ndarray) -> tuple[float, int, float]:
    """(median sample interval, intervals longer than ``GAP_FACTOR`` times it, the largest interval)."""
    median_dt = float(np.median(np.diff(ts))) if ts.size > 1 else 0.0
    gaps = 0
    largest = 0.0
    if ts.size > 1:
        d = np.diff(ts)
        largest = float(d.max())
        gaps = int(np.count_nonzero(d > GAP_FACTOR * median_dt)) if median_dt > 0 else 0
    return median_dt, gaps, largest


def _issues(q: QualityReport, n_bad_ts: int, unit: str, min_history_s: float) -> tuple[str, ...]:
    """The report's findings as sentences, in a fixed order."""
    issues: list[str] = []
    if q.samples_in == 0:
        issues.append("no samples")
    if n_bad_ts:
        issues.append(f"{n_bad_ts} sample(s) with a missing or impossible timestamp dropped")
    if q.nan - n_bad_ts > 0:
        issues.append(f"{q.nan - n_bad_ts} NaN/inf sample(s) dropped")
    if q.negative:
        issues.append(f"{q.negative} negative sample(s) dropped")
    if q.huge:
        issues.append(f"{q.huge} implausibly large sample(s) (> {HUGE.get(unit, np.inf):g} {unit}) dropped")
    if q.duplicates:
        issues.append(f"{q.duplicates} duplicate timestamp(s), last value kept")
    if q.out_of_order:
        issues.append(f"{q.out_of_order} out-of-order sample(s) sorted")
    if q.counter_resets:
        issues.append(f"{q.counter_resets} counter reset(s) bridged")
    if q.gaps:
        issues.append(f"{q.gaps} gap(s) longer than {GAP_FACTOR:g}x the median interval; largest "
                      f"{q.largest_gap_s:.0f} s")
    if q.samples_in and not q.samples:
        issues.append("no usable sample left")
    elif q.too_little_history:
        issues.append(f"too little history: {q.samples} sample(s) over {q.history_s:.0f} s (want >= "
                      f"{min_history_s:.0f} s)")
    return tuple(issues)


def make_series(
    workload: str,
    container: str,
    resource: str,
    timestamps: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    *,
    unit: str | None = None,
    counter: bool = False,
    min_history_s: float = 0.0,
    request: float | None = None,
    limit: float | None = None,
    oom_kills: Sequence[float] | np.ndarray = (),
    labels: dict[str, str] | None = None,
) -> UsageSeries:
    """Clean raw points (see :func:`clean_series`) into a :class:`UsageSeries`."""
    kind = check_resource(resource)
    unit = unit or UNITS[kind]
    ts, vs, report = clean_series(timestamps, values, unit=unit, counter=counter, min_history_s=min_history_s)
    oom = np.sort(np.asarray(oom_kills, dtype=float).ravel())
    return UsageSeries(workload, container, kind, unit, ts, vs, report, request, limit, oom, dict(labels or {}))


@runtime_checkable
class MetricsSource(Protocol):
    """Where usage comes from: Prometheus, Airflow task records, trace files, ...

    ``series(resource)`` returns one :class:`UsageSeries` per (workload,
    container) that has data for that resource kind, each with its quality
    report.  A source raises ``ValueError`` for a resource kind it cannot
    provide at all (naming the kind and what it offers).
    """

    def resources(self) -> tuple[ResourceKind, ...]: ...

    def series(self, resource: ResourceKind) -> list[UsageSeries]: ...

    def issues(self) -> list[str]:
        """Data-quality findings that belong to no single series (e.g. rows without a container id),
        as sentences, for what :meth:`series` has read so far."""
        ...
