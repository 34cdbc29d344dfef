"""Recommendation types and the recommender strategy interface.

A recommender is a strategy class with typed settings (a frozen dataclass),
in the style of KRR's strategies: ``recommend(series, previous=None)`` looks
only at the samples in ``series`` (a backtest passes the history before the
decision time) and returns one :class:`Recommendation`, or raises
:class:`NotEnoughData` naming the series and what is missing.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from effopt.metrics.series import UsageSeries
from effopt.rightsizing.gpu import GpuFit, gpu_fit
from effopt.rightsizing.settings import RecommenderSettings, SettingError, parse_settings
from effopt.units import DAY


class NotEnoughData(ValueError):
    """A recommender cannot recommend for this series (too few samples, too short a history, no usable value)."""


@dataclass(frozen=True)
class Evidence:
    """What a recommendation rests on."""

    samples: int
    window_start: float | None
    window_end: float | None
    percentile: float | None
    method: str
    notes: tuple[str, ...] = ()
    #: Share (0..1) of the recommendation's margin a fleet-level prior supplies rather than the container's own
    #: history; None for recommenders without a prior.  Above 0.5 it rests mostly on the fleet.
    fleet_weight: float | None = None

    @property
    def rests_on_fleet(self) -> bool:
        return self.fleet_weight is not None and self.fleet_weight > 0.5

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "window_start": self.window_start, "window_end": self.window_end,
                "percentile": self.percentile, "method": self.method, "notes": list(self.notes),
                "fleet_weight": self.fleet_weight, "rests_on": None if self.fleet_weight is None
                else "fleet" if self.rests_on_fleet else "own history"}


@dataclass(frozen=True)
class Recommendation:
    """A recommended request for one resource of one container.

    ``target`` is the recommended request (for memory also the limit);
    ``lower`` and ``upper`` bound the values the recommender considers safe
    (VPA's lower and upper bounds).  ``confidence`` is in [0, 1): VPA's
    confidence ``c = min(history days, samples / 1440)`` mapped to
    ``c / (1 + c)`` (one day of minute samples -> 0.5, a week -> 0.875).
    ``gpu`` names the smallest GPU / MIG slice holding ``target`` for GPU
    memory recommendations.
    """

    workload: str
    container: str
    resource: str
    unit: str
    recommender: str
    target: float
    lower: float
    upper: float
    confidence: float
    evidence: Evidence
    gpu: GpuFit | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "container": self.container, "resource": self.resource, "unit": self.unit,
                "recommender": self.recommender, "target": self.target, "lower": self.lower, "upper": self.upper,
                "confidence": self.confidence, "evidence": self.evidence.as_dict(),
                "gpu": None if self.gpu is None else self.gpu.as_dict()}


def vpa_confidence_days(timestamps: np.ndarray) -> float:
    """VPA's confidence: min(lifespan in days, samples / 1440)."""
    if timestamps.size == 0:
        return 0.0
    return min(float(timestamps[-1] - timestamps[0]) / DAY, timestamps.size / 1440.0)


def confidence_score(days: float) -> float:
    return days / (1.0 + days) if days > 0 else 0.0


S = TypeVar("S")


class Recommender(ABC, Generic[S]):
    """A right-sizing strategy: ``name``, a settings dataclass, and :meth:`recommend`."""

    name: ClassVar[str]
    settings_class: ClassVar[type]

    def __init__(self, settings: S | None = None, **overrides: Any) -> None:
        known = {f.name for f in fields(self.settings_class)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise SettingError(f"recommender {self.name!r} has no setting(s) {', '.join(unknown)}; "
                               f"known: {', '.join(sorted(known))}")
        base = settings if settings is not None else self.settings_class()
        if overrides:
            base = parse_settings(self.settings_class, overrides, base) if issubclass(
                self.settings_class, RecommenderSettings) else type(base)(**{
                    **{f.name: getattr(base, f.name) for f in fields(base)}, **overrides})
        self.settings: S = base

    def calibrate(self, series: Sequence[UsageSeries]) -> Any:
        """A fleet-level prior learned from ``series`` (all it may see), to pass to :meth:`recommend`; None
        (the default: the recommender has no fleet prior) means there is none to pass."""
        return None

    @abstractmethod
    def recommend(self, series: UsageSeries, previous: Recommendation | None = None,
                  prior: Any = None) -> Recommendation:
        """Recommend for ``series`` from its samples only (and ``prior``, what :meth:`calibrate` returned, if
        it returned one); raise :class:`NotEnoughData` when it cannot."""

    # -- helpers shared by the strategies ---------------------------------------
    def _require(self, series: UsageSeries, min_samples: int = 1) -> None:
        if series.values.size < min_samples:
            raise NotEnoughData(
                f"{self.name}: {series.workload}/{series.container} {series.resource} has {series.values.size} "
                f"usable sample(s), needs at least {min_samples}"
                + (f" ({'; '.join(series.quality.issues)})" if series.quality.issues else ""))

    def _result(self, series: UsageSeries, target: float, lower: float, upper: float, confidence: float,
                evidence: Evidence) -> Recommendation:
        for label, v in (("target", target), ("lower", lower), ("upper", upper)):
            if not math.isfinite(v) or v < 0:
                raise NotEnoughData(f"{self.name}: {series.workload}/{series.container} {series.resource}: "
                                    f"{label} came out as {v!r}")
        gpu = gpu_fit(target) if series.resource == "gpu_memory" and series.unit == "bytes" else None
        return Recommendation(series.workload, series.container, series.resource, series.unit, self.name,
                              float(target), float(min(lower, target)), float(max(upper, target)),
                              float(confidence), evidence, gpu)


@dataclass(frozen=True)
class _Registry:
    classes: dict[str, type[Recommender[Any]]] = field(default_factory=dict)


REGISTRY = _Registry()


def register(cls: type[Recommender[Any]]) -> type[Recommender[Any]]:
    REGISTRY.classes[cls.name] = cls
    return cls


def recommender_names() -> list[str]:
    """The registered recommenders' names, sorted (the choices of the CLI and the DAG)."""
    return sorted(REGISTRY.classes)


def recommender_class(name: str) -> type[Recommender[Any]]:
    """The registered recommender class called ``name``; ValueError naming the known ones otherwise."""
    if name not in REGISTRY.classes:
        raise ValueError(f"unknown recommender {name!r}; known: {', '.join(recommender_names())}")
    return REGISTRY.classes[name]


def get_recommender(name: str, settings: Mapping[str, Any] | None = None, /, **overrides: Any) -> Recommender[Any]:
    """The recommender called ``name`` (vpa, krr, effopt) with ``settings`` (a ``{name: value}`` dict, values as
    strings or numbers, e.g. the DAG's ``recommender_settings`` param) and ``overrides`` replacing its defaults,
    validated against the settings' declared types and bounds (:class:`SettingError` names a bad one)."""
    cls = recommender_class(name)
    return cls(**{**dict(settings or {}), **overrides})
