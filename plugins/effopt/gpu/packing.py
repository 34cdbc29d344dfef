"""The GPU-packing LP: how well a mix of requests can fill the cluster's GPUs, and what each size is worth.

Relax the cluster to its GPUs, each a bin of 1000 thousandths (no CPU, memory or node boundaries; a
k-GPU request is k whole-GPU items). A *configuration* is a multiset of sharing sizes that fits one GPU
(sum ≤ 1000), or one whole-GPU item. The configuration LP

    max  Σ_c vol(c)·x_c
    s.t. Σ_c x_c ≤ G                    (GPUs)               dual: bin price π_G
         Σ_c a_{s,c}·x_c ≤ n_s          (items of size s)    dual: item price π_s
         x_whole ≤ W,  x ≥ 0

bounds what any packer can allocate (offline, with hindsight): its value is an upper bound on the
allocated GPU, hence ``capacity − value`` a lower bound on the unallocated GPU. It is solved by column
generation: a small dense simplex over the configurations found so far, and a knapsack over sizes
priced ``s − π_s`` to find a better configuration, until none improves.

The duals drive effopt's GPU choice for sharing requests: the value of a free gap of h thousandths is
V(h) = max Σ (s − π_s) over multisets of sizes fitting in h, and putting a size-s request into a gap h
loses ``V(h) − (s − π_s) − V(h − s)`` ≥ 0 of that value: zero exactly when the placement is part of an
optimal packing of the expected mix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from math import gcd

import numpy as np

from effopt.gpu.model import MILLI

_EPS = 1e-9


def simplex_max(c: np.ndarray, a: np.ndarray, b: np.ndarray,
                max_iter: int = 20_000) -> tuple[float, np.ndarray, np.ndarray]:
    """``max c·x`` subject to ``a x ≤ b``, ``x ≥ 0`` with ``b ≥ 0``: a dense tableau simplex (Bland's rule,
    so it cannot cycle). Returns (value, x, duals of the rows)."""
    m, n = a.shape
    if (b < 0).any():
        raise ValueError("simplex_max needs b >= 0")
    t = np.zeros((m + 1, n + m + 1))
    t[:m, :n] = a
    t[:m, n:n + m] = np.eye(m)
    t[:m, -1] = b
    t[m, :n] = -c
    basis = list(range(n, n + m))
    for _ in range(max_iter):
        entering = np.flatnonzero(t[m, :-1] < -_EPS)
        if not entering.size:
            break
        j = int(entering[0])
        col = t[:m, j]
        pos = col > _EPS
        if not pos.any():
            raise ValueError("the LP is unbounded")
        ratios = np.full(m, np.inf)
        ratios[pos] = t[:m, -1][pos] / col[pos]
        ties = np.flatnonzero(ratios <= ratios.min() + _EPS)
        i = int(min(ties, key=lambda r: basis[r]))
        t[i] /= t[i, j]
        others = np.arange(m + 1) != i
        t[others] -= np.outer(t[others, j], t[i])
        basis[i] = j
    else:
        raise RuntimeError("simplex did not converge")
    x = np.zeros(n + m)
    for i, bj in enumerate(basis):
        x[bj] = t[i, -1]
    return float(t[m, -1]), x[:n], t[m, n:n + m].copy()


@dataclass(frozen=True)
class PackingLP:
    """The solved configuration LP: its value (thousandths) and prices."""

    value: float
    bins: int
    bin_price: float
    prices: dict[int, float]  # sharing size -> π_s
    gap_value: np.ndarray  # V(h) for h = 0..1000

    @property
    def unallocated_bound_pct(self) -> float:
        """Lower bound on unallocated GPU, % of the GPUs, for any packing of the mix."""
        return 100.0 * (self.bins * MILLI - self.value) / (self.bins * MILLI)

    def loss(self, gap: np.ndarray, size: int) -> np.ndarray:
        """Value lost by putting a size-``size`` request into free gaps ``gap`` (thousandths, ≥ size)."""
        gap = np.asarray(gap, dtype=np.int64)
        profit = size - self.prices.get(size, 0.0)
        return self.gap_value[gap] - profit - self.gap_value[gap - size]


def _knapsack(sizes: np.ndarray, profits: np.ndarray, capacity: int, unit: int) -> tuple[np.ndarray, np.ndarray]:
    """Unbounded knapsack over capacities 0..capacity in steps of ``unit``: best profit and the last item."""
    steps = capacity // unit
    w = sizes // unit
    best = np.zeros(steps + 1)
    last = np.full(steps + 1, -1, dtype=np.int64)
    for h in range(1, steps + 1):
        best[h], last[h] = best[h - 1], -1
        ok = w <= h
        if ok.any():
            cand = np.where(ok, best[np.maximum(h - w, 0)] + profits, -np.inf)
            k = int(np.argmax(cand))
            if cand[k] > best[h] + _EPS:
                best[h], last[h] = cand[k], k
    return best, last


def _sharing_sizes(share_counts: Mapping[int, float]) -> np.ndarray:
    """The sharing sizes that have requests, sorted; each must be in 1..999 thousandths."""
    sizes = np.array(sorted(s for s, n in share_counts.items() if n > 0), dtype=np.int64)
    if (sizes <= 0).any() or (sizes >= MILLI).any():
        raise ValueError("sharing sizes must be in 1..999 thousandths")
    return sizes


def _start_configs(sizes: np.ndarray, index: Mapping[int, int],
                   columns: list[tuple[int, ...]] | None) -> list[tuple[int, ...]]:
    """One configuration per size (one item alone on a GPU), then the warm-start ``columns`` that still fit."""
    configs: list[tuple[int, ...]] = [(int(s),) for s in sizes]
    for cfg in columns or ():
        if cfg and all(s in index for s in cfg) and sum(cfg) <= MILLI and cfg not in configs:
            configs.append(cfg)
    return configs


def _config_matrix(configs: list[tuple[int, ...]], index: Mapping[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(constraint matrix: a row for the GPUs, one per size and one for whole-GPU items; the volume of each
    configuration), with the whole-GPU configuration as the last column."""
    k = len(index)
    a = np.zeros((k + 2, len(configs) + 1))
    vol = np.zeros(len(configs) + 1)
    for j, cfg in enumerate(configs):
        a[0, j] = 1.0
        for s in cfg:
            a[1 + index[s], j] += 1.0
        vol[j] = sum(cfg)
    a[0, -1] = a[k + 1, -1] = 1.0  # the whole-GPU configuration
    vol[-1] = MILLI
    return a, vol


def _knapsack_items(sizes: np.ndarray, last: np.ndarray, top: int, unit: int) -> tuple[int, ...]:
    """The sizes of the knapsack's best filling of ``top`` units, read back from its ``last`` choices."""
    cfg, h = [], top
    while h > 0:
        if last[h] < 0:
            h -= 1
            continue
        cfg.append(int(sizes[last[h]]))
        h -= int(sizes[last[h]]) // unit
    return tuple(sorted(cfg))


def solve_packing_lp(share_counts: Mapping[int, float], whole: float, bins: int,
                     columns: list[tuple[int, ...]] | None = None) -> tuple[PackingLP, list[tuple[int, ...]]]:
    """Solve the configuration LP for ``share_counts`` (sharing size in thousandths -> number of requests),
    ``whole`` whole-GPU items and ``bins`` GPUs. ``columns``: configurations from an earlier solve to start
    from (warm start). Returns the solution and the configurations used, for the next warm start.

    Column generation: solve the LP over the configurations known so far, price a new configuration with a
    knapsack over the duals, add it while it improves the LP; then the per-size prices and the gap curve.
    """
    sizes = _sharing_sizes(share_counts)
    k = sizes.size
    unit = MILLI
    for s in sizes:
        unit = gcd(unit, int(s))
    index = {int(s): i for i, s in enumerate(sizes)}
    configs = _start_configs(sizes, index, columns)
    b = np.concatenate([[float(bins)], [float(share_counts[int(s)]) for s in sizes], [float(whole)]])
    for _ in range(1000):
        a, vol = _config_matrix(configs, index)
        value, _, duals = simplex_max(vol, a, b)
        bin_price, prices = duals[0], duals[1:k + 1]
        if not k:
            break
        best, last = _knapsack(sizes, sizes - prices, MILLI, unit)
        top = int(np.argmax(best))
        if best[top] - bin_price <= 1e-6:
            break
        new = _knapsack_items(sizes, last, top, unit)
        if new in configs:
            break
        configs.append(new)
    price = {int(s): float(p) for s, p in zip(sizes, prices if k else [], strict=True)}
    profits = sizes - (prices if k else np.zeros(0))
    gap = np.zeros(MILLI + 1)
    if k:
        gap, _ = _knapsack(sizes, np.maximum(profits, 0.0), MILLI, 1)
    return PackingLP(value, bins, float(bin_price), price, gap), configs


def packing_bound(requests, bins: int) -> PackingLP:
    """The LP for a list of requests on ``bins`` GPUs (e.g. everything that arrived by x = 100)."""
    share: dict[int, float] = {}
    whole = 0
    for r in requests:
        if r.is_sharing:
            share[r.gpu_milli] = share.get(r.gpu_milli, 0) + 1
        elif r.num_gpu:
            whole += r.num_gpu
    return solve_packing_lp(share, whole, bins)[0]
