"""Placement policies behind one interface: ``policy.place(state, request) -> Placement | NoFit``.

The baselines follow the score plugins of the FGD paper's public simulator
(hkust-adsl/kubernetes-scheduler-simulator) as its published experiment configures them:

* every policy first filters nodes (CPU, memory, GPU model, GPU fit), then scores each feasible node with
  an integer 0..100 and takes the highest; ties go to the node that ranks first in a fixed random ranking
  of the nodes drawn from the seed (the simulator's Kubernetes fork picks the smallest node name, and the
  simulator prefixes every node name with a seeded random permutation index); a sharing request then
  gets one GPU of that node by the policy's GPU selection;
* ``random``: a uniformly random feasible node, a uniformly random GPU that fits;
* ``best-fit``: least CPU and GPU left after the placement, each normalised (128 cores, 8 GPUs), the
  tightest GPU for a sharing request;
* ``dot-product``: smallest dot product of the free and requested (CPU, GPU) vectors, both normalised as
  in best-fit, tightest GPU;
* ``gpu-packing``: a partly used GPU first, then a used node, then an idle one; tightest GPU;
* ``gpu-clustering``: nodes that already hold pods of the same kind (sharing, 1-GPU, 2-GPU ...) first;
* ``fgd``: the node, and for a sharing request the GPU, whose F_n(M) grows least, scored
  ``int(100·sigmoid(-ΔF/1000))``;
* ``effopt``: see :class:`EffoptPolicy`.

The exact definitions, and what the published protocol leaves open, are in ``bench/RESULTS-gpu.md``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from effopt.gpu.fragmentation import FragmentationIndex, TargetWorkload, TaskType
from effopt.gpu.model import MILLI, ClusterState, GpuRequest, NoFit, Placement

MAX_SCORE = 100
MAX_SPEC_CPU = 128_000  # milli-CPU: the simulator's normalisation of best-fit and dot-product
MAX_SPEC_GPU = 8_000  # thousandths of a GPU: 8 GPUs


class Policy(ABC):
    """Picks a node (and GPU indices) for one request on any :class:`ClusterState`."""

    name = ""
    gpu_selection = "best"  # best: tightest GPU that fits; random: any GPU that fits

    def __init__(self, seed: int | np.random.Generator | None = None, ties: str = "rank") -> None:
        if ties not in ("rank", "random"):
            raise ValueError(f"ties must be 'rank' or 'random', got {ties!r}")
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.ties = ties
        self._salt = int(self.rng.integers(2**62)).to_bytes(8, "little")
        self._rank: tuple[int, np.ndarray] | None = None

    def rank(self, state: ClusterState) -> np.ndarray:
        """The tie-breaking rank of every node (lower wins): a hash of the node name salted from the seed,
        so a node keeps its rank when the state is rebuilt from a live inventory."""
        if self._rank is None or self._rank[0] != state.uid:
            ranks = np.array([int.from_bytes(hashlib.blake2b(n.name.encode(), digest_size=8, key=self._salt).digest(),
                                             "little") >> 1 for n in state.nodes], dtype=np.int64)
            self._rank = (state.uid, ranks)
        return self._rank[1]

    def place(self, state: ClusterState, request: GpuRequest) -> Placement | NoFit:
        idx = np.flatnonzero(state.feasible(request))
        if idx.size == 0:
            return NoFit(state.explain(request), request)
        if idx.size == 1:  # the Kubernetes scheduler skips scoring when one node is left
            node = int(idx[0])
            gpu = self.gpu_choice(state, request, idx)
            return self._finish(state, request, node, None if gpu is None else int(gpu[0]))
        scores, gpu = self.score(state, request, idx)
        best = np.flatnonzero(scores == scores.max())
        pick = int(best[0]) if best.size == 1 else self.tie_break(state, idx, best)
        return self._finish(state, request, int(idx[pick]), None if gpu is None else int(gpu[pick]))

    def tie_break(self, state: ClusterState, idx: np.ndarray, best: np.ndarray) -> int:
        if self.ties == "random":
            return int(best[self.rng.integers(best.size)])
        return int(best[np.argmin(self.rank(state)[idx[best]])])

    @abstractmethod
    def score(self, state: ClusterState, request: GpuRequest, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Integer scores of the feasible nodes ``idx`` (higher is better) and, for a sharing request, the
        GPU each node would give it (None: let :meth:`select_gpu` choose on the chosen node)."""

    def gpu_choice(self, state: ClusterState, request: GpuRequest, idx: np.ndarray) -> np.ndarray | None:
        """The GPU each node of ``idx`` would give a sharing request when no scoring ran."""
        return None

    def _finish(self, state: ClusterState, request: GpuRequest, node: int, gpu: int | None) -> Placement:
        if not request.num_gpu:
            return state.placement(node, request)
        if not request.is_sharing:
            return state.placement(node, request, state.exclusive_gpus(node, request.num_gpu))
        if gpu is None:
            gpu = self.select_gpu(state, request, node)
        return state.placement(node, request, (gpu,))

    def select_gpu(self, state: ClusterState, request: GpuRequest, node: int) -> int:
        free = state.gpu_free[node, : state.gpu_count[node]]
        fits = np.flatnonzero(free >= request.gpu_milli)
        if self.gpu_selection == "random":
            return int(fits[self.rng.integers(fits.size)])
        return int(fits[np.argmin(free[fits])])  # tightest fit, lowest index among equals


class RandomFit(Policy):
    name = "random"
    gpu_selection = "random"

    def score(self, state, request, idx):
        return np.zeros(idx.size, dtype=np.int64), None

    def tie_break(self, state, idx, best):
        return int(best[self.rng.integers(best.size)])  # the plugin scores one uniformly drawn node 100


class BestFit(Policy):
    name = "best-fit"

    def score(self, state, request, idx):
        left = ((state.cpu_free[idx] - request.cpu_milli) / MAX_SPEC_CPU * 0.5
                + (state.gpu_free_total[idx] - request.total_gpu_milli) / MAX_SPEC_GPU * 0.5)
        return np.trunc((1.0 - left) * MAX_SCORE).astype(np.int64), None


class DotProduct(Policy):
    name = "dot-product"

    def score(self, state, request, idx):
        dot = ((state.cpu_free[idx] / MAX_SPEC_CPU) * (request.cpu_milli / MAX_SPEC_CPU)
               + (state.gpu_free_total[idx] / MAX_SPEC_GPU) * (request.total_gpu_milli / MAX_SPEC_GPU))
        return np.trunc(MAX_SCORE * (1 - dot / 2)).astype(np.int64), None


class GpuPacking(Policy):
    name = "gpu-packing"

    def score(self, state, request, idx):
        if not request.num_gpu:
            return np.zeros(idx.size, dtype=np.int64), None
        full = state.gpu_full[idx]
        idle = full == state.gpu_count[idx]
        idle_score = np.maximum(MAX_SCORE // 3 - full, full)
        if request.is_sharing:
            g = state.gpu_free[idx]
            tight = np.where(g >= request.gpu_milli, g, MILLI + 1).min(axis=1)  # the GPU it would take
            shared = np.maximum(MAX_SCORE - (tight * 100 // MILLI) // 10, MAX_SCORE // 2)
            used_node = np.maximum(MAX_SCORE // 2 - 1, MAX_SCORE // 3)
            busy = np.where(tight < MILLI, shared, used_node)
        else:
            busy = np.full(idx.size, max(MAX_SCORE // 2 - request.num_gpu, MAX_SCORE // 3), dtype=np.int64)
        return np.where(idle, idle_score, busy).astype(np.int64), None


class GpuClustering(Policy):
    name = "gpu-clustering"

    def score(self, state, request, idx):
        if not request.num_gpu:
            return np.zeros(idx.size, dtype=np.int64), None
        kinds = state.kind_count[idx]
        same = kinds[:, 0 if request.is_sharing else request.num_gpu] > 0
        distinct = (kinds > 0).sum(axis=1)
        used = MAX_SPEC_GPU - state.gpu_free_total[idx]
        base = np.sign(used) * (np.abs(MAX_SCORE // 4 * used) // MAX_SPEC_GPU)  # Go's truncating division
        band = np.where(same, np.where(distinct == 1, 3, 2), np.where(distinct == 0, 1, 0)) * (MAX_SCORE // 4)
        return (base + band).astype(np.int64), None


class _FragmentScored(Policy):
    """Shared machinery of fragmentation-scored policies: a fragmentation index bound to the state and a
    per-(request shape) cache of node scores, recomputed only for nodes whose version changed."""

    def __init__(self, workload: TargetWorkload | None, seed=None, ties: str = "rank") -> None:
        super().__init__(seed, ties)
        self.workload = workload
        self._index: FragmentationIndex | None = None
        self._cache: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def index(self, state: ClusterState) -> FragmentationIndex:
        if self.workload is None:
            raise ValueError(f"policy {self.name!r} needs a target workload")
        if self._index is None or self._index.state is not state or self._index.workload is not self.workload:
            self._index = FragmentationIndex(state, self.workload)
            self._cache.clear()
        else:
            self._index.refresh()
        return self._index

    def cached(self, state: ClusterState, request: GpuRequest, idx: np.ndarray,
               compute: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        entry = self._cache.get(request.shape)
        if entry is None:
            n = state.size
            entry = (np.zeros(n, dtype=np.float64), np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64))
            self._cache[request.shape] = entry
        value, gpu, ver = entry
        stale = idx[ver[idx] != state.version[idx]]
        if stale.size:
            value[stale], gpu[stale] = compute(stale)
            ver[stale] = state.version[stale]
        return value[idx], gpu[idx]

    def delta(self, state: ClusterState, request: GpuRequest, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ΔF = F_n(M) before − after placing the request on each node of ``rows`` (positive: less
        fragmentation), and the GPU a sharing request would take (the one with the best ΔF, lowest index)."""
        index = self._index
        before = index.F[rows]
        if not request.is_sharing:
            if request.num_gpu:
                after = index.after(rows, MILLI, MILLI, request.num_gpu, request.cpu_milli)
            else:
                after = index.after(rows, 0, 0, 0, request.cpu_milli)
            return before - after, np.full(rows.size, -1, dtype=np.int64)
        g = state.gpu_free[rows]
        cols = np.arange(g.shape[1])
        cand = (g >= request.gpu_milli) & (cols[None, :] < state.gpu_count[rows][:, None])
        # Equal free amounts on one node give equal results: keep the first GPU of each amount.
        dup = np.triu(np.ones((g.shape[1], g.shape[1]), dtype=bool), 1)
        seen = ((g[:, :, None] == g[:, None, :]) & dup[None, :, :]).any(axis=1)
        cand &= ~seen
        r, c = np.nonzero(cand)
        after = index.after(rows[r], g[r, c], request.gpu_milli, 1, request.cpu_milli)
        return self.pick_gpu(before[r] - after, r, c, rows.size, g.shape[1])

    def pick_gpu(self, gain: np.ndarray, r: np.ndarray, c: np.ndarray, k: int, width: int):
        table = np.full((k, width), -np.inf)
        table[r, c] = self.gpu_score(gain)
        best = table.argmax(axis=1)
        return table[np.arange(k), best], best

    def gpu_score(self, gain: np.ndarray) -> np.ndarray:
        return gain

    def gpu_choice(self, state, request, idx):
        if not request.is_sharing:
            return None
        self.index(state)
        return self.cached(state, request, idx, lambda rows: self.delta(state, request, rows))[1]


def fgd_score(gain: np.ndarray) -> np.ndarray:
    """The simulator's node score: ``int(100·sigmoid(ΔF/1000))`` with ΔF = before − after."""
    return np.trunc(1.0 / (1.0 + np.exp(-gain / MILLI)) * MAX_SCORE)


class FGD(_FragmentScored):
    """Fragmentation gradient descent with a fixed target workload M."""

    name = "fgd"

    def __init__(self, workload: TargetWorkload, seed=None, ties: str = "rank") -> None:
        super().__init__(workload, seed, ties)

    def gpu_score(self, gain):
        return fgd_score(gain)

    def score(self, state, request, idx):
        self.index(state)

        def compute(rows):
            gain, gpu = self.delta(state, request, rows)
            return (gain if request.is_sharing else fgd_score(gain)), gpu

        value, gpu = self.cached(state, request, idx, compute)
        return value.astype(np.int64), (gpu if request.is_sharing else None)


REGISTRY: dict[str, type[Policy]] = {
    cls.name: cls for cls in (RandomFit, BestFit, DotProduct, GpuPacking, GpuClustering, FGD)
}
NEEDS_WORKLOAD = frozenset({"fgd"})


def get_policy(name: str, workload: TargetWorkload | None = None, seed: int | np.random.Generator | None = None,
               **options) -> Policy:
    """A fresh policy by name. ``fgd`` needs the target workload M (learned from a pod list)."""
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r} (known: {', '.join(REGISTRY)})") from None
    if name in NEEDS_WORKLOAD:
        if workload is None:
            raise ValueError(f"policy {name!r} needs a target workload (TargetWorkload.from_requests(pods))")
        return cls(workload, seed=seed, **options)
    if name == "effopt":
        return cls(workload, seed=seed, **options)
    return cls(seed=seed, **options)


__all__ = ["FGD", "MAX_SCORE", "NEEDS_WORKLOAD", "REGISTRY", "BestFit", "DotProduct", "GpuClustering",
           "GpuPacking", "Policy", "RandomFit", "TaskType", "fgd_score", "get_policy"]
