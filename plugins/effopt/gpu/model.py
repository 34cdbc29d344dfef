"""Cluster model of the GPU placement engine: nodes, requests, placements and the mutable cluster state.

GPU capacity is counted in thousandths of a GPU ("milli"): a whole GPU is 1000, a pod that asks for
``gpu_milli = 250`` of one GPU takes 250 of that GPU's 1000. Only a pod with ``num_gpu == 1`` and
``gpu_milli < 1000`` shares a GPU; a pod with ``num_gpu = k`` needs ``k`` fully free GPUs on one node.
CPU is in milli-cores, memory in MiB, as in the Alibaba GPU trace.

:class:`ClusterState` works one request at a time on any set of nodes: the simulator builds one from a
node list, the GPU leases of the Airflow layer build one from a live inventory, and both call
``policy.place(state, request)`` and then :meth:`ClusterState.apply` / :meth:`ClusterState.release`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

MILLI = 1000  # thousandths of a GPU in one GPU

_state_ids = itertools.count(1)


@dataclass(frozen=True)
class Node:
    """A machine: CPU (milli-cores), memory (MiB), ``gpus`` devices of one ``model``."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int = 0
    model: str = ""

    def __post_init__(self) -> None:
        for attr in ("cpu_milli", "memory_mib", "gpus"):
            value = getattr(self, attr)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"node {self.name!r}: {attr} must be a non-negative integer, got {value!r}")


@dataclass(frozen=True)
class GpuRequest:
    """What a pod (or a GPU lease) asks for.

    ``gpu_milli`` is per GPU: a 2-GPU pod asks ``num_gpu=2, gpu_milli=1000``; a quarter of a GPU is
    ``num_gpu=1, gpu_milli=250``. ``models`` lists the GPU models allowed (empty: any model).
    """

    cpu_milli: int
    memory_mib: int = 0
    num_gpu: int = 0
    gpu_milli: int = 0
    models: tuple[str, ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        for attr in ("cpu_milli", "memory_mib", "num_gpu", "gpu_milli"):
            value = getattr(self, attr)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"request {self.name!r}: {attr} must be a non-negative integer, got {value!r}")
        if self.num_gpu == 0 and self.gpu_milli != 0:
            raise ValueError(f"request {self.name!r}: gpu_milli={self.gpu_milli} without num_gpu")
        if self.num_gpu > 0 and not 0 < self.gpu_milli <= MILLI:
            raise ValueError(f"request {self.name!r}: gpu_milli must be in 1..{MILLI} when num_gpu > 0, "
                             f"got {self.gpu_milli}")
        if self.num_gpu > 1 and self.gpu_milli != MILLI:
            raise ValueError(f"request {self.name!r}: a {self.num_gpu}-GPU request must take whole GPUs "
                             f"(gpu_milli={MILLI}), got {self.gpu_milli}")
        object.__setattr__(self, "models", tuple(m for m in self.models if m))

    @property
    def is_cpu_only(self) -> bool:
        return self.num_gpu == 0

    @property
    def is_sharing(self) -> bool:
        """True for a fractional request (one GPU, less than all of it), the only kind that shares a GPU."""
        return self.num_gpu == 1 and self.gpu_milli < MILLI

    @property
    def total_gpu_milli(self) -> int:
        return self.num_gpu * self.gpu_milli

    @property
    def shape(self) -> tuple[int, int, int, tuple[str, ...]]:
        """(cpu, gpu_milli, num_gpu, models): what every score looks at (no score looks at memory)."""
        return (self.cpu_milli, self.gpu_milli, self.num_gpu, self.models)

    @property
    def kind(self) -> str:
        """``cpu``, ``share-gpu`` or ``<k>-gpu``: the GPU-clustering policy groups pods by it."""
        if self.num_gpu == 0:
            return "cpu"
        return "share-gpu" if self.is_sharing else f"{self.num_gpu}-gpu"

    def allows(self, model: str) -> bool:
        return not self.models or model in self.models


@dataclass(frozen=True)
class Placement:
    """Where a request goes: a node and GPU device indices (``gpu_milli`` of each is taken)."""

    node_index: int
    node: str
    gpus: tuple[int, ...]
    gpu_milli: int
    request: GpuRequest

    def __bool__(self) -> bool:
        return True


@dataclass(frozen=True)
class NoFit:
    """Nothing fits the request; ``reason`` says why (which filters removed the nodes)."""

    reason: str
    request: GpuRequest | None = field(default=None, compare=False)

    def __bool__(self) -> bool:
        return False


class ClusterState:
    """Free CPU, memory and per-GPU free thousandths of every node, changed one placement at a time.

    The arrays are public for the policies' vectorised paths and must only be changed through
    :meth:`apply` and :meth:`release`, which also bump ``version[i]`` of the node they touch (caches
    keyed on a node's version then know to rescore just that node).
    """

    def __init__(self, nodes: Sequence[Node]) -> None:
        if not nodes:
            raise ValueError("a cluster needs at least one node")
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"duplicate node name {dup!r}")
        self.nodes: tuple[Node, ...] = tuple(nodes)
        self.uid = next(_state_ids)
        n = len(nodes)
        self.max_gpus = max(1, max(node.gpus for node in nodes))
        self.models: tuple[str, ...] = tuple(sorted({node.model for node in nodes}))
        self._model_index = {m: i for i, m in enumerate(self.models)}
        self.model_code = np.array([self._model_index[node.model] for node in nodes], dtype=np.int64)
        self.cpu_cap = np.array([node.cpu_milli for node in nodes], dtype=np.int64)
        self.mem_cap = np.array([node.memory_mib for node in nodes], dtype=np.int64)
        self.gpu_count = np.array([node.gpus for node in nodes], dtype=np.int64)
        self.cpu_free = self.cpu_cap.copy()
        self.mem_free = self.mem_cap.copy()
        # Free thousandths per GPU; columns past a node's GPU count stay 0 (they never fit anything).
        self.gpu_free = np.zeros((n, self.max_gpus), dtype=np.int64)
        for i, node in enumerate(nodes):
            self.gpu_free[i, : node.gpus] = MILLI
        self.version = np.zeros(n, dtype=np.int64)
        # Pods placed per node by kind (for GPU clustering): column 0 sharing pods, column k k-GPU pods.
        self.kind_count = np.zeros((n, self.max_gpus + 1), dtype=np.int64)
        self.gpu_capacity_milli = int(self.gpu_count.sum()) * MILLI
        self._derive_all()

    # -- derived per-node quantities kept current by apply/release ---------------------------------
    def _derive_all(self) -> None:
        self.gpu_free_total = self.gpu_free.sum(axis=1)
        self.gpu_max_free = self.gpu_free.max(axis=1)
        self.gpu_full = (self.gpu_free == MILLI).sum(axis=1)

    def _derive(self, i: int) -> None:
        row = self.gpu_free[i]
        self.gpu_free_total[i] = row.sum()
        self.gpu_max_free[i] = row.max()
        self.gpu_full[i] = int((row == MILLI).sum())
        self.version[i] += 1

    @property
    def size(self) -> int:
        return len(self.nodes)

    def index(self, name: str) -> int:
        for i, node in enumerate(self.nodes):
            if node.name == name:
                return i
        raise KeyError(f"no node named {name!r}")

    def model_mask(self, request: GpuRequest) -> np.ndarray:
        """Nodes whose GPU model the request allows (all nodes for a request without a model list)."""
        if not request.models:
            return np.ones(self.size, dtype=bool)
        codes = [self._model_index[m] for m in request.models if m in self._model_index]
        return np.isin(self.model_code, codes)

    def feasible(self, request: GpuRequest) -> np.ndarray:
        """Boolean mask of the nodes that pass every hard filter: CPU, memory, GPU model, GPU fit."""
        ok = (self.cpu_free >= request.cpu_milli) & (self.mem_free >= request.memory_mib)
        if request.num_gpu:
            ok &= self.model_mask(request)
            if request.num_gpu == 1:
                ok &= self.gpu_max_free >= request.gpu_milli
            else:
                ok &= self.gpu_full >= request.num_gpu
        return ok

    def explain(self, request: GpuRequest) -> str:
        """Why no node fits, filter by filter (for :class:`NoFit`)."""
        parts = []
        cpu = self.cpu_free < request.cpu_milli
        mem = self.mem_free < request.memory_mib
        if cpu.any():
            parts.append(f"{int(cpu.sum())} short of {request.cpu_milli} milli-CPU")
        if mem.any():
            parts.append(f"{int(mem.sum())} short of {request.memory_mib} MiB memory")
        if request.num_gpu:
            model = ~self.model_mask(request)
            if model.any():
                parts.append(f"{int(model.sum())} of another GPU model than {'|'.join(request.models)}")
            if request.num_gpu == 1:
                gpu = self.gpu_max_free < request.gpu_milli
                what = f"a GPU with {request.gpu_milli} thousandths free"
            else:
                gpu = self.gpu_full < request.num_gpu
                what = f"{request.num_gpu} fully free GPUs"
            if gpu.any():
                parts.append(f"{int(gpu.sum())} without {what}")
        if not parts:
            return "no node fits"
        return f"no node fits ({self.size} nodes: " + "; ".join(parts) + ")"

    def fits_empty(self, request: GpuRequest) -> bool:
        """Whether the request fits at least one node of this cluster when that node is empty."""
        ok = (self.cpu_cap >= request.cpu_milli) & (self.mem_cap >= request.memory_mib)
        if request.num_gpu:
            ok &= self.model_mask(request) & (self.gpu_count >= request.num_gpu)
        return bool(ok.any())

    # -- GPU selection helpers shared by the policies ----------------------------------------------
    def exclusive_gpus(self, i: int, num: int) -> tuple[int, ...]:
        """The first ``num`` fully free GPUs of node ``i``, by device index."""
        free = np.flatnonzero(self.gpu_free[i, : self.gpu_count[i]] == MILLI)
        if free.size < num:
            raise ValueError(f"node {self.nodes[i].name!r} has {free.size} fully free GPUs, {num} asked")
        return tuple(int(g) for g in free[:num])

    def placement(self, i: int, request: GpuRequest, gpus: Iterable[int] = ()) -> Placement:
        gpus = tuple(int(g) for g in gpus)
        if request.num_gpu and not gpus:
            gpus = self.exclusive_gpus(i, request.num_gpu)
        return Placement(i, self.nodes[i].name, gpus, request.gpu_milli if request.num_gpu else 0, request)

    # -- mutation ---------------------------------------------------------------------------------
    def check(self, placement: Placement) -> None:
        """Raise ``ValueError`` if the placement does not fit the current state."""
        r, i = placement.request, placement.node_index
        if not 0 <= i < self.size or self.nodes[i].name != placement.node:
            raise ValueError(f"placement names node {placement.node!r} at index {i}, not in this cluster")
        if self.cpu_free[i] < r.cpu_milli or self.mem_free[i] < r.memory_mib:
            raise ValueError(f"node {placement.node!r} lacks CPU or memory for {r.name or 'the request'}")
        if len(placement.gpus) != r.num_gpu or len(set(placement.gpus)) != len(placement.gpus):
            raise ValueError(f"placement on {placement.node!r} names GPUs {placement.gpus}, "
                             f"the request needs {r.num_gpu} distinct ones")
        if r.num_gpu and not r.allows(self.nodes[i].model):
            raise ValueError(f"node {placement.node!r} has GPU model {self.nodes[i].model!r}, "
                             f"the request allows {'|'.join(r.models)}")
        for g in placement.gpus:
            if not 0 <= g < self.gpu_count[i] or self.gpu_free[i, g] < r.gpu_milli:
                raise ValueError(f"GPU {g} of node {placement.node!r} lacks {r.gpu_milli} free thousandths")

    def apply(self, placement: Placement) -> None:
        """Take the placement's resources (checked first; a placement that does not fit raises)."""
        self.check(placement)
        r, i = placement.request, placement.node_index
        self.cpu_free[i] -= r.cpu_milli
        self.mem_free[i] -= r.memory_mib
        for g in placement.gpus:
            self.gpu_free[i, g] -= r.gpu_milli
        if r.num_gpu:
            self.kind_count[i, 0 if r.is_sharing else r.num_gpu] += 1
        self._derive(i)

    def release(self, placement: Placement) -> None:
        """Give back what :meth:`apply` took (raises if that would exceed the node's capacity)."""
        r, i = placement.request, placement.node_index
        if self.nodes[i].name != placement.node:
            raise ValueError(f"placement names node {placement.node!r} at index {i}, not in this cluster")
        if self.cpu_free[i] + r.cpu_milli > self.cpu_cap[i] or self.mem_free[i] + r.memory_mib > self.mem_cap[i]:
            raise ValueError(f"releasing {r.name or 'the request'} would exceed node {placement.node!r}'s capacity")
        for g in placement.gpus:
            if self.gpu_free[i, g] + r.gpu_milli > MILLI:
                raise ValueError(f"releasing GPU {g} of node {placement.node!r} would exceed one GPU")
        k = 0 if r.is_sharing else r.num_gpu
        if r.num_gpu and self.kind_count[i, k] <= 0:
            raise ValueError(f"node {placement.node!r} holds no {r.kind} pod to release")
        self.cpu_free[i] += r.cpu_milli
        self.mem_free[i] += r.memory_mib
        for g in placement.gpus:
            self.gpu_free[i, g] += r.gpu_milli
        if r.num_gpu:
            self.kind_count[i, k] -= 1
        self._derive(i)

    # -- accounting --------------------------------------------------------------------------------
    @property
    def gpu_used_milli(self) -> int:
        return self.gpu_capacity_milli - int(self.gpu_free_total.sum())

    def copy(self) -> ClusterState:
        other = object.__new__(ClusterState)
        other.__dict__.update(self.__dict__)
        for name in ("cpu_free", "mem_free", "gpu_free", "version", "kind_count", "gpu_free_total",
                     "gpu_max_free", "gpu_full"):
            setattr(other, name, getattr(self, name).copy())
        other.uid = next(_state_ids)
        return other
