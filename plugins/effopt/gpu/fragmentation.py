"""GPU fragmentation as FGD defines it (Weng et al., USENIX ATC '23), per node and for the whole cluster.

The *target workload* M is a set of task types m (CPU, thousandths per GPU, GPU count, allowed models)
with probabilities p_m. With R_g the free thousandths of GPU g of node n, the fragment of n for m is

* all of Σ_g R_g when m is CPU-only, or cannot run on n (GPU model not allowed, too little free CPU,
  fewer than m's GPU count of GPUs with R_g ≥ m's per-GPU request);
* otherwise Σ_g R_g·[R_g < m's per-GPU request]: the GPUs m could not use.

F_n(M) = Σ_m p_m·F_n(m) is the GPU the next task, drawn from M, could not use on n. The cluster's is the
sum over nodes; the fragmentation ratio is that sum over the cluster's free GPU.

Two implementations: :func:`task_fragment` / :func:`node_fragmentation`, plain Python and written to be
read against the definition, and :class:`FragmentationIndex`, which keeps per-node partial sums current
for a :class:`~effopt.gpu.model.ClusterState` (recomputing only nodes whose version changed) and scores
hypothetical placements on many nodes at once. The tests check that the two agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from effopt.gpu.model import MILLI, ClusterState, GpuRequest

DEFAULT_COVERAGE = 0.95  # the published simulator keeps the most popular types up to 95% of pods


@dataclass(frozen=True)
class TaskType:
    """One type of the target workload: what F_n(m) looks at (memory is not part of FGD's measure)."""

    cpu_milli: int
    gpu_milli: int
    num_gpu: int
    models: tuple[str, ...] = ()

    @classmethod
    def of(cls, request: GpuRequest) -> TaskType:
        return cls(request.cpu_milli, request.gpu_milli if request.num_gpu else 0, request.num_gpu, request.models)

    def _order(self) -> tuple[int, int, int, str]:
        return (self.cpu_milli, self.gpu_milli, self.num_gpu, "|".join(self.models))


class TargetWorkload:
    """Task types with probabilities (normalised to 1)."""

    def __init__(self, types: Sequence[TaskType], weights: Sequence[float]) -> None:
        if not types or len(types) != len(weights):
            raise ValueError("a target workload needs one weight per task type, and at least one type")
        w = np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError("target workload weights must be finite, non-negative and not all zero")
        self.types: tuple[TaskType, ...] = tuple(types)
        self.p = w / w.sum()
        self.cpu = np.array([t.cpu_milli for t in types], dtype=np.int64)
        self.milli = np.array([t.gpu_milli for t in types], dtype=np.int64)
        self.num = np.array([t.num_gpu for t in types], dtype=np.int64)
        self.gpu = self.num > 0

    def __len__(self) -> int:
        return len(self.types)

    def __repr__(self) -> str:
        return f"TargetWorkload({len(self.types)} types)"

    @classmethod
    def from_requests(cls, requests: Iterable[GpuRequest], coverage: float = DEFAULT_COVERAGE,
                      include_cpu_only: bool = True) -> TargetWorkload:
        """M learned from a pod list, as the published simulator does it: the distinct request types, most
        frequent first (ties: larger CPU, then GPU request first), kept until they cover ``coverage`` of the
        pods, with their frequencies renormalised over the kept ones."""
        if not 0 < coverage <= 1:
            raise ValueError(f"coverage must be in (0, 1], got {coverage}")
        counts = Counter(TaskType.of(r) for r in requests if include_cpu_only or r.num_gpu)
        if not counts:
            raise ValueError("cannot learn a target workload from an empty pod list")
        return cls.from_counts(counts, coverage)

    @classmethod
    def from_counts(cls, counts: dict[TaskType, float], coverage: float = DEFAULT_COVERAGE) -> TargetWorkload:
        ranked = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]._order()), reverse=True)
        total = float(sum(counts.values()))
        kept, cum = [], 0.0
        for t, c in ranked:
            if cum >= coverage * total:
                break
            kept.append((t, c))
            cum += c
        return cls([t for t, _ in kept], [c for _, c in kept])

    def access(self, models: Sequence[str]) -> np.ndarray:
        """(len(models), T) bool: GPU type m may run on a node of each model (False for CPU-only types)."""
        out = np.zeros((len(models), len(self.types)), dtype=bool)
        for j, t in enumerate(self.types):
            if t.num_gpu:
                out[:, j] = [not t.models or m in t.models for m in models]
        return out


# -- reference implementation (plain Python, read against the definition) ---------------------------
def task_fragment(cpu_free: int, gpu_free: Sequence[int], model: str, task: TaskType) -> int:
    """F_n(m): the free thousandths of node n that task type m could not use."""
    total = sum(gpu_free)
    if task.num_gpu == 0:
        return total
    if task.models and model not in task.models:
        return total
    if cpu_free < task.cpu_milli:
        return total
    if sum(1 for r in gpu_free if r >= task.gpu_milli) < task.num_gpu:
        return total
    return sum(r for r in gpu_free if r < task.gpu_milli)


def node_fragmentation(cpu_free: int, gpu_free: Sequence[int], model: str, workload: TargetWorkload) -> float:
    """F_n(M) = Σ_m p_m·F_n(m)."""
    return sum(float(p) * task_fragment(cpu_free, gpu_free, model, t) for t, p in zip(workload.types, workload.p,
                                                                                       strict=True))


# -- vectorised, cached implementation -------------------------------------------------------------
class FragmentationIndex:
    """F_n(M) of every node of one cluster state, kept current by recomputing changed nodes only.

    Per node and task type it caches S = Σ_g R_g·[R_g < k_m] and C = #{g: R_g ≥ k_m}; the fragment after a
    hypothetical placement follows from those in O(1) per type (:meth:`after`), so scoring a request on
    every node costs one vectorised pass over (nodes × types) instead of recomputing each node.
    """

    def __init__(self, state: ClusterState, workload: TargetWorkload) -> None:
        self.state = state
        self.workload = workload
        n, t = state.size, len(workload)
        self.access = workload.access(state.models)[state.model_code]  # (N, T)
        self.S = np.zeros((n, t), dtype=np.int64)
        self.C = np.zeros((n, t), dtype=np.int64)
        self.F = np.zeros(n, dtype=np.float64)
        self.task_frag = np.zeros((n, t), dtype=np.int64)
        self._ver = np.full(n, -1, dtype=np.int64)
        self.refresh()

    def refresh(self) -> None:
        stale = np.flatnonzero(self._ver != self.state.version)
        if stale.size:
            self._compute(stale)

    def _compute(self, rows: np.ndarray) -> None:
        st, w = self.state, self.workload
        g = st.gpu_free[rows]  # (K, G)
        ge = g[:, :, None] >= w.milli[None, None, :]  # (K, G, T)
        self.C[rows] = ge.sum(axis=1)
        self.S[rows] = (g[:, :, None] * ~ge).sum(axis=1)
        frag = self._frag(rows, st.cpu_free[rows], self.S[rows], self.C[rows], st.gpu_free_total[rows])
        self.task_frag[rows] = frag
        self.F[rows] = frag @ w.p
        self._ver[rows] = st.version[rows]

    def _frag(self, rows: np.ndarray, cpu: np.ndarray, s: np.ndarray, c: np.ndarray, total: np.ndarray) -> np.ndarray:
        w = self.workload
        fits = self.access[rows] & (cpu[:, None] >= w.cpu[None, :]) & (c >= w.num[None, :])
        return np.where(fits, s, total[:, None])

    def after(self, rows: np.ndarray, gpu_before: np.ndarray | int, take: int, count: int, cpu: int) -> np.ndarray:
        """F_n(M) of nodes ``rows`` after ``count`` GPUs that each had ``gpu_before`` free thousandths give
        ``take`` of them, and ``cpu`` milli-CPU is taken (``count = 0``: a CPU-only request)."""
        w, st = self.workload, self.state
        a = np.broadcast_to(np.asarray(gpu_before, dtype=np.int64), rows.shape)[:, None]
        b = a - take
        k = w.milli[None, :]
        s = self.S[rows] + count * (np.where(b < k, b, 0) - np.where(a < k, a, 0))
        c = self.C[rows] + count * ((b >= k).astype(np.int64) - (a >= k))
        total = st.gpu_free_total[rows] - count * take
        return self._frag(rows, st.cpu_free[rows] - cpu, s, c, total) @ w.p

    def cluster_fragmentation(self) -> float:
        """Σ_n F_n(M) in thousandths of a GPU."""
        self.refresh()
        return float(self.F.sum())


def cluster_fragmentation_ratio(index: FragmentationIndex) -> float | None:
    """Fragmented share of the free GPU, in percent (None when no GPU is free)."""
    free = int(index.state.gpu_free_total.sum())
    return None if free == 0 else 100.0 * index.cluster_fragmentation() / free


def fragment_matrix_reference(state: ClusterState, workload: TargetWorkload) -> np.ndarray:
    """(N, T) F_n(m) computed node by node with :func:`task_fragment` (for tests and checks)."""
    out = np.zeros((state.size, len(workload)), dtype=np.int64)
    for i, node in enumerate(state.nodes):
        free = [int(v) for v in state.gpu_free[i, : node.gpus]]
        for j, t in enumerate(workload.types):
            out[i, j] = task_fragment(int(state.cpu_free[i]), free, node.model, t)
    return out


__all__ = ["DEFAULT_COVERAGE", "MILLI", "FragmentationIndex", "TargetWorkload", "TaskType",
           "cluster_fragmentation_ratio", "fragment_matrix_reference", "node_fragmentation", "task_fragment"]
