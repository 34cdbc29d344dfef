"""Decaying exponential histograms, as in the Kubernetes VPA recommender.

Re-implements ``vertical-pod-autoscaler/pkg/recommender/util`` (histogram.go,
histogram_options.go, decaying_histogram.go) with numpy:

* bucket ``i`` starts at ``first * (ratio**i - 1) / (ratio - 1)`` (bucket 0
  starts at 0), so each bucket is ``ratio`` (1.05) times wider than the one
  before; values beyond the last bucket start fall into the last bucket;
* ``percentile(p)`` walks the buckets until the cumulative weight reaches
  ``p * total`` and returns the END of that bucket (the start of the last
  bucket when it is the last one);
* a decaying histogram multiplies each sample's weight by
  ``2 ** ((t - reference) / half_life)``, so a sample one half-life older
  counts half as much.  Percentiles are ratios of weights, so the reference
  time only matters for numerical range; it is moved forward (and the stored
  weights rescaled) when the exponent would pass :data:`MAX_DECAY_EXPONENT`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPSILON = 1e-4  # VPA: weights below this count as empty
MAX_DECAY_EXPONENT = 100.0


@dataclass(frozen=True)
class HistogramOptions:
    """Exponential bucket layout: ``first`` bucket size, growth ``ratio``, up to ``max_value``."""

    max_value: float
    first: float
    ratio: float = 1.05

    def __post_init__(self) -> None:
        if not (self.first > 0 and self.max_value > self.first and self.ratio > 1):
            raise ValueError(f"invalid histogram options {self}")

    @property
    def num_buckets(self) -> int:
        return int(math.ceil(math.log(self.max_value * (self.ratio - 1) / self.first + 1) / math.log(self.ratio))) + 1

    def bucket_start(self, bucket: int | np.ndarray) -> float | np.ndarray:
        b = np.asarray(bucket, dtype=float)
        start = self.first * (self.ratio**b - 1) / (self.ratio - 1)
        return start if start.ndim else float(start)

    def find_bucket(self, values: float | np.ndarray) -> np.ndarray:
        v = np.asarray(values, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            b = np.floor(np.log(v * (self.ratio - 1) / self.first + 1) / math.log(self.ratio))
        b = np.where(v < self.first, 0, b)
        return np.clip(b, 0, self.num_buckets - 1).astype(int)


#: VPA's layouts: CPU 0.01 core .. 1000 cores, memory 10 MB .. 1 TB.
CPU_OPTIONS = HistogramOptions(max_value=1000.0, first=0.01)
MEMORY_OPTIONS = HistogramOptions(max_value=1e12, first=1e7)
#: Relative units (fraction of a limit, percent) keep the 5% growth with a fine first bucket.
FRACTION_OPTIONS = HistogramOptions(max_value=1000.0, first=1e-3)
PERCENT_OPTIONS = HistogramOptions(max_value=1e5, first=0.1)


def options_for(unit: str) -> HistogramOptions:
    """The bucket layout for values in ``unit`` (cores, bytes, fraction or percent)."""
    layouts = {"cores": CPU_OPTIONS, "bytes": MEMORY_OPTIONS, "fraction": FRACTION_OPTIONS, "percent": PERCENT_OPTIONS}
    if unit not in layouts:
        raise ValueError(f"no histogram layout for unit {unit!r}; expected one of {', '.join(layouts)}")
    return layouts[unit]


class DecayingHistogram:
    """Weighted exponential histogram whose sample weights halve every ``half_life_s`` (0: no decay)."""

    def __init__(self, options: HistogramOptions, half_life_s: float = 0.0) -> None:
        self.options = options
        self.half_life_s = half_life_s
        self.weights = np.zeros(options.num_buckets)
        self.reference: float | None = None

    @property
    def total_weight(self) -> float:
        return float(self.weights.sum())

    def is_empty(self) -> bool:
        return self.weights.max() < EPSILON

    def _decay(self, timestamps: np.ndarray) -> np.ndarray:
        if not self.half_life_s:
            return np.ones_like(timestamps)
        if self.reference is None:
            self.reference = float(np.round(timestamps.min() / self.half_life_s) * self.half_life_s)
        top = float(timestamps.max())
        if (top - self.reference) / self.half_life_s > MAX_DECAY_EXPONENT:
            new_ref = float(np.round(top / self.half_life_s) * self.half_life_s)
            self.weights *= 2.0 ** ((self.reference - new_ref) / self.half_life_s)
            self.reference = new_ref
        return 2.0 ** ((timestamps - self.reference) / self.half_life_s)

    def add(self, values: float | np.ndarray, weights: float | np.ndarray = 1.0,
            timestamps: float | np.ndarray = 0.0) -> None:
        """Add samples (vectorised): ``values`` with ``weights`` observed at ``timestamps``."""
        v = np.atleast_1d(np.asarray(values, dtype=float))
        if not v.size:
            return
        w = np.broadcast_to(np.asarray(weights, dtype=float), v.shape)
        t = np.broadcast_to(np.asarray(timestamps, dtype=float), v.shape)
        np.add.at(self.weights, self.options.find_bucket(v), w * self._decay(t))

    def subtract(self, value: float, weight: float, timestamp: float) -> None:
        """Remove one sample added before (VPA replaces a container's memory peak this way)."""
        b = int(self.options.find_bucket(value))
        self.weights[b] = max(0.0, self.weights[b] - weight * float(self._decay(np.array([timestamp]))[0]))

    def percentile(self, p: float) -> float:
        """VPA's percentile: the end of the first bucket where the cumulative weight reaches ``p`` of the total."""
        if self.is_empty():
            return 0.0
        nonzero = np.flatnonzero(self.weights >= EPSILON)
        lo, hi = int(nonzero[0]), int(nonzero[-1])
        cum = np.cumsum(self.weights[lo:hi + 1])
        threshold = p * self.weights.sum()
        idx = int(np.searchsorted(cum, threshold - 1e-12 * threshold, side="left"))
        bucket = min(lo + idx, hi)
        if bucket < self.options.num_buckets - 1:
            return float(self.options.bucket_start(bucket + 1))
        return float(self.options.bucket_start(bucket))
