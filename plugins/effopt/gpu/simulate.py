"""The published FGD experiment, replayed: arrivals, placement, and the unallocated-GPU curve.

Protocol (as the public simulator runs it for the paper's figures):

* the cluster is the node list (the GPU nodes: 1,213 nodes, 6,212 GPUs); it starts empty;
* timestamps are not used: the trace's pods arrive in a random permutation drawn from ``seed``; after them,
  pods drawn uniformly with replacement from the trace are appended while the GPU requested stays within
  ``ratio`` (130%) of the cluster's GPU capacity;
* each pod is placed once: no departures, no retries; a pod that fits nowhere fails, is dropped, and still
  counts as arrived;
* after each arrival the simulator records the GPU requested so far (failed pods included) and the GPU
  allocated, both in thousandths of a GPU, and the cluster's fragmentation ratio under the trace's M;
* the curve value at requested load x% is the mean allocation over the arrivals whose requested load
  rounds to x (the published analysis script's binning); unallocated = 100 − allocated.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from effopt.gpu.fragmentation import FragmentationIndex, TargetWorkload
from effopt.gpu.model import ClusterState, GpuRequest, Node, NoFit
from effopt.gpu.policies import Policy, get_policy

DEFAULT_RATIO = 1.3
FIRST_SEED = 42
CURVE_X = np.arange(0, 131)  # requested load in % of GPU capacity
TABLE_X = (90, 95, 100, 110, 120)

Progress = Callable[[int, int], None]


def arrivals(pods: Sequence[GpuRequest], capacity_milli: int, seed: int, ratio: float = DEFAULT_RATIO,
             rng: np.random.Generator | None = None) -> list[GpuRequest]:
    """The arrival sequence of one run: the pods in a seeded random order, then pods drawn uniformly with
    replacement from the trace while the total GPU requested stays ≤ ``ratio`` × capacity (the first draw
    that would exceed it ends the sequence)."""
    if not pods:
        raise ValueError("no pods")
    rng = np.random.default_rng(seed) if rng is None else rng
    order = [pods[i] for i in rng.permutation(len(pods))]  # ok: the protocol's seeded arrival order
    requested = sum(p.total_gpu_milli for p in pods)
    target = ratio * capacity_milli
    if requested >= target or not any(p.total_gpu_milli for p in pods):
        return order
    n = len(pods)
    while True:
        # Draw in blocks (same sequence as one draw at a time from this generator's integer stream).
        for i in rng.integers(0, n, size=1024):  # ok: the protocol's seeded resampling with replacement
            pod = pods[int(i)]
            if requested + pod.total_gpu_milli > target:
                return order
            requested += pod.total_gpu_milli
            order.append(pod)


@dataclass
class RunResult:
    """One policy, one seed."""

    policy: str
    seed: int
    capacity_milli: int
    arrived_milli: np.ndarray  # after each arrival, GPU requested so far (failed pods included)
    allocated_milli: np.ndarray  # after each arrival, GPU allocated
    frag_ratio: np.ndarray  # after each arrival, fragmented % of the free GPU (NaN when none is free)
    failed: np.ndarray  # bool per arrival
    failed_requests: list[tuple[GpuRequest, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed_pods(self) -> int:
        return int(self.failed.sum())

    @property
    def load_pct(self) -> np.ndarray:
        return 100.0 * self.arrived_milli / self.capacity_milli

    @property
    def unallocated_pct(self) -> np.ndarray:
        return 100.0 * (self.capacity_milli - self.allocated_milli) / self.capacity_milli

    def curve(self, values: np.ndarray | None = None, xs: Sequence[int] | np.ndarray = CURVE_X) -> np.ndarray:
        """Mean of ``values`` (default: unallocated %) over the arrivals binned at each x (the analysis
        script's rule: requested % rounded to an integer; an empty bin falls back to x ± 1; NaN if still
        empty)."""
        return binned_curve(self.load_pct, self.unallocated_pct if values is None else values, xs)

    def at(self, x: int) -> float:
        return float(self.curve(xs=[x])[0])

    def frag_at(self, x: int) -> float:
        return float(self.curve(self.frag_ratio, xs=[x])[0])


def binned_curve(load_pct: np.ndarray, values: np.ndarray, xs: Sequence[int] | np.ndarray = CURVE_X) -> np.ndarray:
    bins = np.round(load_pct)  # half to even, as Python's round() in the published script
    out = np.full(len(xs), np.nan)
    for j, x in enumerate(xs):
        sel = bins == x
        if not sel.any():
            sel = (bins >= x - 1) & (bins <= x + 1)
        v = values[sel]
        v = v[~np.isnan(v)]
        if v.size:
            out[j] = v.mean()
    return out


def simulate(nodes: Sequence[Node], pods: Sequence[GpuRequest], policy: str | Policy, seed: int = FIRST_SEED,
             ratio: float = DEFAULT_RATIO, workload: TargetWorkload | None = None,
             progress: Progress | None = None) -> RunResult:
    """Run one policy on one seed. ``workload``: the trace's M (learned from ``pods`` when None); it scores
    ``fgd`` and measures fragmentation for every policy."""
    start = time.perf_counter()
    state = ClusterState(nodes)
    workload = workload or TargetWorkload.from_requests(pods)
    seq = arrivals(pods, state.gpu_capacity_milli, seed, ratio)
    if isinstance(policy, str):
        name = policy
        policy = get_policy(policy, workload=workload, seed=np.random.default_rng([seed, 1]))
    else:
        name = policy.name
    report = FragmentationIndex(state, workload)
    n = len(seq)
    arrived = np.zeros(n, dtype=np.int64)
    allocated = np.zeros(n, dtype=np.int64)
    frag = np.zeros(n, dtype=np.float64)
    failed = np.zeros(n, dtype=bool)
    failures: list[tuple[GpuRequest, str]] = []
    requested = 0
    used = 0
    for i, req in enumerate(seq):
        requested += req.total_gpu_milli
        result = policy.place(state, req)
        if isinstance(result, NoFit):
            failed[i] = True
            failures.append((req, result.reason))
        else:
            state.apply(result)
            used += req.total_gpu_milli
        arrived[i] = requested
        allocated[i] = used
        report.refresh()
        free = state.gpu_capacity_milli - used
        frag[i] = 100.0 * report.F.sum() / free if free else np.nan
        if progress is not None and (i % 500 == 0 or i == n - 1):
            progress(i + 1, n)
    return RunResult(name, seed, state.gpu_capacity_milli, arrived, allocated, frag, failed, failures,
                     time.perf_counter() - start)


@dataclass
class Summary:
    """A policy over several seeds."""

    policy: str
    runs: list[RunResult]

    def stat(self, x: int, frag: bool = False) -> tuple[float | None, float | None]:
        vals = np.array([r.frag_at(x) if frag else r.at(x) for r in self.runs])
        vals = vals[~np.isnan(vals)]
        if not vals.size:
            return None, None
        return float(vals.mean()), (float(vals.std(ddof=1)) if vals.size > 1 else None)

    def curves(self) -> np.ndarray:
        return np.vstack([r.curve() for r in self.runs])

    @property
    def failed_pods(self) -> float:
        return float(np.mean([r.failed_pods for r in self.runs]))

    @property
    def seconds(self) -> float:
        return float(np.mean([r.seconds for r in self.runs]))


def _run_one(args: tuple) -> RunResult:
    nodes, pods, name, seed, ratio, workload = args
    result = simulate(nodes, pods, name, seed, ratio, workload)
    result.failed_requests = result.failed_requests[:50]  # keep what crosses process boundaries small
    return result


def run_many(nodes: Sequence[Node], pods: Sequence[GpuRequest], policies: Sequence[str], seeds: Sequence[int],
             ratio: float = DEFAULT_RATIO, jobs: int = 1, progress: Progress | None = None,
             workload: TargetWorkload | None = None) -> dict[str, Summary]:
    """Every policy on every seed (``jobs`` > 1: in that many worker processes)."""
    workload = workload or TargetWorkload.from_requests(pods)
    for name in policies:  # fail fast on a bad name, before any process starts
        get_policy(name, workload=workload)
    tasks = [(list(nodes), list(pods), name, seed, ratio, workload) for name in policies for seed in seeds]
    results: list[RunResult] = []
    total = len(tasks)
    if progress:
        progress(0, total)
    if jobs <= 1 or total == 1:
        for t in tasks:
            results.append(_run_one(t))
            if progress:
                progress(len(results), total)
    else:
        with ProcessPoolExecutor(max_workers=min(jobs, total, os.cpu_count() or 1)) as pool:
            for r in pool.map(_run_one, tasks):
                results.append(r)
                if progress:
                    progress(len(results), total)
    out: dict[str, Summary] = {}
    for r in results:
        out.setdefault(r.policy, Summary(r.policy, [])).runs.append(r)
    return out
