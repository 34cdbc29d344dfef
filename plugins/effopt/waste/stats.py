"""Robust statistics used by the detectors: Theil–Sen slope, Mann–Kendall test, MAD."""

from __future__ import annotations

import math

import numpy as np

#: Scale factor making the MAD a consistent estimator of a normal standard deviation.
MAD_TO_SIGMA = 1.4826


def theil_sen(t: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept): the median of pairwise slopes, and the median of ``y - slope * t``.

    Quadratic in the number of points: pass aggregated points (hundreds, not
    thousands).  Pairs with equal ``t`` are ignored.
    """
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    if t.size < 2:
        raise ValueError(f"Theil-Sen needs at least 2 points, got {t.size}")
    i, j = np.triu_indices(t.size, k=1)
    dt = t[j] - t[i]
    ok = dt != 0
    if not ok.any():
        raise ValueError("Theil-Sen needs at least 2 distinct times")
    slope = float(np.median((y[j][ok] - y[i][ok]) / dt[ok]))
    return slope, float(np.median(y - slope * t))


def mann_kendall(y: np.ndarray) -> tuple[float, float, float]:
    """(S, z, one-sided p-value for an increasing trend) of the Mann–Kendall test, with the tie correction."""
    y = np.asarray(y, dtype=float)
    n = y.size
    if n < 3:
        raise ValueError(f"Mann-Kendall needs at least 3 points, got {n}")
    i, j = np.triu_indices(n, k=1)
    s = float(np.sign(y[j] - y[i]).sum())
    _, counts = np.unique(y, return_counts=True)
    ties = counts[counts > 1]
    var = (n * (n - 1) * (2 * n + 5) - float((ties * (ties - 1) * (2 * ties + 5)).sum())) / 18.0
    if var <= 0:
        return s, 0.0, 1.0
    z = (s - 1) / math.sqrt(var) if s > 0 else ((s + 1) / math.sqrt(var) if s < 0 else 0.0)
    return s, z, 0.5 * math.erfc(z / math.sqrt(2.0))


def mad(x: np.ndarray) -> float:
    """Median absolute deviation from the median (unscaled)."""
    x = np.asarray(x, dtype=float)
    return float(np.median(np.abs(x - np.median(x)))) if x.size else float("nan")
