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

import numpy as np

from effopt.gpu.fragmentation import FragmentationIndex, TargetWorkload, TaskType
from effopt.gpu.model import MILLI, ClusterState, GpuRequest, NoFit, Placement
from effopt.gpu.packing import PackingLP, solve_packing_lp

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
        self._salt = int(self.rng.integers(2**62)).to_bytes(8, "little")  # ok: seeded node ranking for ties
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
            return int(best[self.rng.integers(best.size)])  # ok: seeded random tie-break (option)
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
            return int(fits[self.rng.integers(fits.size)])  # ok: the random plugin's seeded GPU choice
        return int(fits[np.argmin(free[fits])])  # tightest fit, lowest index among equals


class RandomFit(Policy):
    name = "random"
    gpu_selection = "random"

    def score(self, state, request, idx):
        return np.zeros(idx.size, dtype=np.int64), None

    def tie_break(self, state, idx, best):
        return int(best[self.rng.integers(best.size)])  # ok: the random plugin's seeded uniform node


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
    """Shared machinery of the fragmentation-scored policies (``fgd``, ``effopt``).

    A :class:`FragmentationIndex` bound to the state keeps F_n(M) of every node; node scores are cached per
    request shape and recomputed only for nodes whose version changed (and all of them when M changes).
    A node's score is FGD's ``int(100·sigmoid(gain/1000))`` of its gain in thousandths of a GPU: ΔF for
    ``fgd``, ΔF plus a per-node term (:meth:`extra_gain`) for ``effopt``.
    """

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

    def _scores(self, state: ClusterState, request: GpuRequest, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cached node scores and GPU choices for the feasible nodes ``idx``."""
        self.index(state)
        entry = self._cache.get(request.shape)
        if entry is None:
            n = state.size
            entry = (np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64))
            self._cache[request.shape] = entry
        value, gpu, ver = entry
        stale = idx[ver[idx] != state.version[idx]]
        if stale.size:
            value[stale], gpu[stale] = self.node_scores(state, request, stale)
            ver[stale] = state.version[stale]
        return value[idx], gpu[idx]

    def score(self, state, request, idx):
        value, gpu = self._scores(state, request, idx)
        return value, (gpu if request.is_sharing else None)

    def gpu_choice(self, state, request, idx):
        return self._scores(state, request, idx)[1] if request.is_sharing else None

    def extra_gain(self, state: ClusterState, request: GpuRequest, rows: np.ndarray) -> np.ndarray | None:
        """A per-node term added to ΔF before scoring (thousandths of a GPU; None: nothing)."""
        return None

    @staticmethod
    def share_candidates(state: ClusterState, request: GpuRequest, rows: np.ndarray):
        """The GPUs of nodes ``rows`` a sharing request could take: (row positions, GPU indices, free
        thousandths). Equal free amounts on a node count once, the first GPU of each amount standing for
        them (they give equal results, and the simulator's GPU selection takes the lowest index)."""
        g = state.gpu_free[rows]
        width = g.shape[1]
        cand = (g >= request.gpu_milli) & (np.arange(width)[None, :] < state.gpu_count[rows][:, None])
        later = np.triu(np.ones((width, width), dtype=bool), 1)
        cand &= ~((g[:, :, None] == g[:, None, :]) & later[None, :, :]).any(axis=1)
        r, c = np.nonzero(cand)
        return r, c, g[r, c]

    def gains(self, state: ClusterState, request: GpuRequest, rows: np.ndarray):
        """ΔF = F_n(M) before − after placing the request on each node of ``rows`` (positive: less
        fragmentation). For a sharing request one gain per candidate GPU (:meth:`share_candidates`):
        returns ``(gain, r, c)``; otherwise ``(gain, None, None)`` with one gain per node."""
        index = self._index
        before = index.F[rows]
        if not request.is_sharing:
            if request.num_gpu:
                after = index.after(rows, MILLI, MILLI, request.num_gpu, request.cpu_milli)
            else:
                after = index.after(rows, 0, 0, 0, request.cpu_milli)
            return before - after, None, None
        r, c, free = self.share_candidates(state, request, rows)
        after = index.after(rows[r], free, request.gpu_milli, 1, request.cpu_milli)
        return before[r] - after, r, c

    def node_scores(self, state: ClusterState, request: GpuRequest, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer score of each node of ``rows`` and, for a sharing request, its best GPU (the lowest
        index among the GPUs with the node's best score, as the simulator's GPU selection picks it)."""
        gain, r, c = self.gains(state, request, rows)
        extra = self.extra_gain(state, request, rows)
        if r is None:
            if extra is not None:
                gain = gain + extra
            return fgd_score(gain).astype(np.int64), np.full(rows.size, -1, dtype=np.int64)
        if extra is not None:
            gain = gain + extra[r]
        table = np.full((rows.size, state.gpu_free.shape[1]), -1, dtype=np.int64)
        table[r, c] = fgd_score(gain)
        best = table.argmax(axis=1)
        return table[np.arange(rows.size), best], best


def fgd_score(gain: np.ndarray) -> np.ndarray:
    """The simulator's node score: ``int(100·sigmoid(gain/1000))``, gain = F before − F after (thousandths)."""
    return np.trunc(1.0 / (1.0 + np.exp(-np.asarray(gain, dtype=np.float64) / MILLI)) * MAX_SCORE).astype(np.int64)


class FGD(_FragmentScored):
    """Fragmentation gradient descent with a fixed target workload M."""

    name = "fgd"

    def __init__(self, workload: TargetWorkload, seed=None, ties: str = "rank") -> None:
        super().__init__(workload, seed, ties)


class EffoptPolicy(_FragmentScored):
    """effopt's rule: price GPU slivers with the packing LP's duals, and count the GPU that CPU will strand.

    Two things FGD's one-task-ahead measure misses, each in thousandths of a GPU so they add without a
    weight, then scored and tie-broken exactly as FGD's (``int(100·sigmoid(gain/1000))``, the node ranked
    first among equals):

    * **Stranded GPU.** GPU pods bring about κ milli-CPU per thousandth of a GPU (κ: CPU over GPU requested
      by the GPU pods seen so far), so a node with R thousandths of GPU and c milli-CPU free will, as it
      fills, leave about ``max(0, R − c/κ)`` thousandths without the CPU to use them. Every request's gain
      includes the change of that amount: a CPU-only pod goes where CPU is in surplus, a CPU-hungry GPU pod
      to a node with CPU to spare.
    * **Sliver value (sharing requests).** The configuration LP of :mod:`effopt.gpu.packing`, solved for the
      mix of requests seen so far scaled to the cluster's GPUs, prices each sharing size (π_s) and each free
      gap (V(h)). A sharing request's gain on a GPU with h free is minus the value it destroys there,
      ``V(h) − (s − π_s) − V(h − s)``, which is zero only for placements that belong to an optimal packing
      of the mix (an 810 next to a 160, a 650 next to a 320 ...). This replaces FGD's ΔF for them.
    * Whole-GPU and CPU-only requests keep FGD's ΔF (their GPU choice is fixed: whole GPUs by index).

    M, κ and the LP are learned online from the requests the policy is asked to place (each call counts as
    an arrival; set ``learn = False`` to stop), and refreshed when the arrivals grew by 5% since the last
    refresh (at least 16), which also invalidates the score cache. ``workload`` is an optional prior M used
    until the first refresh. What was measured and dropped is in ``bench/RESULTS-gpu.md``.
    """

    name = "effopt"
    MIN_REFRESH = 16
    REFRESH_GROWTH = 0.05

    def __init__(self, workload: TargetWorkload | None = None, seed=None, ties: str = "rank",
                 learn: bool = True) -> None:
        super().__init__(workload, seed, ties)
        self.learn = learn
        self._counts: dict[TaskType, int] = {}
        self._share: dict[int, int] = {}  # sharing size -> requests seen
        self._whole = 0  # whole GPUs requested by the non-sharing GPU requests seen
        self._seen = 0
        self._last_refresh = 0
        self._gpu_cpu = 0  # milli-CPU requested by GPU requests seen
        self._gpu_milli = 0  # thousandths of GPU requested by them
        self.kappa = self._prior_kappa(workload)
        self.lp: PackingLP | None = None
        self._lp_key: tuple[int, int] | None = None
        self._lp_columns: list[tuple[int, ...]] = []
        self._refreshes = 0

    @staticmethod
    def _prior_kappa(workload: TargetWorkload | None) -> float | None:
        if workload is None or not workload.gpu.any():
            return None
        g = workload.gpu
        return float((workload.p[g] * workload.cpu[g]).sum()
                     / (workload.p[g] * workload.num[g] * workload.milli[g]).sum())

    def observe(self, request: GpuRequest) -> None:
        """Count an arrival; refresh M, κ and the packing prices when arrivals grew enough since the last."""
        t = TaskType.of(request)
        self._counts[t] = self._counts.get(t, 0) + 1
        self._seen += 1
        if request.num_gpu:
            self._gpu_cpu += request.cpu_milli
            self._gpu_milli += request.total_gpu_milli
            if request.is_sharing:
                self._share[request.gpu_milli] = self._share.get(request.gpu_milli, 0) + 1
            else:
                self._whole += request.num_gpu
        due = max(self.MIN_REFRESH, int(self.REFRESH_GROWTH * self._last_refresh))
        if self.workload is None or self._seen - self._last_refresh >= due:
            self.workload = TargetWorkload.from_counts(self._counts)
            self.kappa = self._gpu_cpu / self._gpu_milli if self._gpu_milli else None
            self._last_refresh = self._seen  # the next index() call rebuilds the index and the cache
            self._refreshes += 1

    def place(self, state, request):
        if self.learn:
            self.observe(request)
        return super().place(state, request)

    def packing(self, state: ClusterState) -> PackingLP | None:
        """The LP for the sharing and whole-GPU requests seen so far, scaled to this cluster's GPUs."""
        key = (state.uid, self._refreshes)
        if self._lp_key != key:
            self._lp_key = key
            self.lp = None
            if self._share and self._gpu_milli:
                scale = state.gpu_capacity_milli / self._gpu_milli
                share = {s: n * scale for s, n in self._share.items()}
                self.lp, self._lp_columns = solve_packing_lp(share, self._whole * scale,
                                                             state.gpu_capacity_milli // MILLI, self._lp_columns)
        return self.lp

    def stranded(self, cpu_free: np.ndarray, gpu_free: np.ndarray) -> np.ndarray:
        """Thousandths of GPU that the free CPU cannot serve at κ milli-CPU per thousandth."""
        if not self.kappa:
            return np.zeros(np.shape(gpu_free))
        return np.maximum(0.0, gpu_free - cpu_free / self.kappa)

    def extra_gain(self, state, request, rows):
        cpu, gpu = state.cpu_free[rows], state.gpu_free_total[rows]
        return self.stranded(cpu, gpu) - self.stranded(cpu - request.cpu_milli, gpu - request.total_gpu_milli)

    def gains(self, state, request, rows):
        if not request.is_sharing:
            return super().gains(state, request, rows)
        r, c, free = self.share_candidates(state, request, rows)
        lp = self.packing(state)
        loss = lp.loss(free, request.gpu_milli) if lp is not None else np.zeros(free.size)
        return -loss, r, c


REGISTRY: dict[str, type[Policy]] = {
    cls.name: cls for cls in (RandomFit, BestFit, DotProduct, GpuPacking, GpuClustering, FGD, EffoptPolicy)
}
NEEDS_WORKLOAD = frozenset({"fgd"})


def get_policy(name: str, workload: TargetWorkload | None = None, seed: int | np.random.Generator | None = None,
               **options) -> Policy:
    """A fresh policy by name. ``fgd`` needs the target workload M (learned from a pod list); ``effopt``
    takes it as an optional prior and learns its own from the requests it places."""
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r} (known: {', '.join(REGISTRY)})") from None
    if name in NEEDS_WORKLOAD:
        if workload is None:
            raise ValueError(f"policy {name!r} needs a target workload (TargetWorkload.from_requests(pods))")
        return cls(workload, seed=seed, **options)
    if issubclass(cls, _FragmentScored):
        return cls(workload, seed=seed, **options)
    return cls(seed=seed, **options)


__all__ = ["FGD", "MAX_SCORE", "NEEDS_WORKLOAD", "REGISTRY", "BestFit", "DotProduct", "EffoptPolicy", "GpuClustering",
           "GpuPacking", "Policy", "RandomFit", "TaskType", "fgd_score", "get_policy"]
