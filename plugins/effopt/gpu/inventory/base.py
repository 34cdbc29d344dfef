"""What a GPU inventory returns, whatever its source: nodes, their GPUs and MIG slices, and what already runs there.

Plain Python. A node's *leasable units* are what a GPU lease hands out: its whole GPUs (those not in MIG
mode), grouped by model, and its MIG slices, grouped by profile (a slice is leased whole, like a GPU of
model ``mig-<profile>``). :func:`effopt.gpu.leases.LeaseCluster` turns them into the placement engine's
:class:`~effopt.gpu.model.ClusterState`.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from effopt.gpu.model import MILLI

MIG_PREFIX = "mig-"


class InventoryError(ValueError):
    """An inventory that cannot be read as given (a bad file, a bad label): names the file, node and key."""


class InventoryUnavailable(RuntimeError):
    """The inventory's source did not answer (no NVIDIA driver, an API down); ``transient`` when a retry may help."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def normalize_model(name: str | bytes) -> str:
    """A GPU model name as effopt uses it in pools and requests: the driver's name with spaces as dashes, as GPU
    feature discovery labels nodes (``nvidia.com/gpu.product``), without the vendor prefix:
    ``NVIDIA A100-SXM4-40GB`` and ``NVIDIA-A100-SXM4-40GB`` are both ``A100-SXM4-40GB``."""
    text = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    text = re.sub(r"\s+", "-", text.strip())
    return re.sub(r"^NVIDIA-", "", text, flags=re.IGNORECASE) or text


def mig_model(profile: str) -> str:
    """The model name under which a MIG profile's slices are leased (``3g.20gb`` -> ``mig-3g.20gb``)."""
    return profile if profile.startswith(MIG_PREFIX) else MIG_PREFIX + profile


@dataclass(frozen=True)
class GpuDevice:
    """One physical GPU. ``memory_total_mib`` 0: unknown. A GPU in MIG mode is leased by slice, never whole."""

    index: int
    model: str
    uuid: str = ""
    memory_total_mib: int = 0
    memory_used_mib: int | None = None
    utilization_pct: float | None = None
    mig_enabled: bool = False
    processes: tuple[tuple[int, int], ...] = ()  # (pid, used MiB) of compute processes, where the source knows them

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "model": self.model, "uuid": self.uuid, "memory_total_mib": self.memory_total_mib,
                "memory_used_mib": self.memory_used_mib, "utilization_pct": self.utilization_pct,
                "mig_enabled": self.mig_enabled, "processes": [list(p) for p in self.processes]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GpuDevice:
        return cls(int(d["index"]), str(d["model"]), str(d.get("uuid") or ""), int(d.get("memory_total_mib") or 0),
                   d.get("memory_used_mib"), d.get("utilization_pct"), bool(d.get("mig_enabled")),
                   tuple((int(p[0]), int(p[1])) for p in d.get("processes") or ()))


@dataclass(frozen=True)
class MigSlice:
    """One MIG slice (``profile`` such as ``3g.20gb``) of GPU ``parent`` (None: the source does not say which)."""

    profile: str
    parent: int | None = None
    uuid: str = ""
    memory_total_mib: int = 0

    @property
    def model(self) -> str:
        return mig_model(self.profile)

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "parent": self.parent, "uuid": self.uuid,
                "memory_total_mib": self.memory_total_mib}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MigSlice:
        parent = d.get("parent")
        return cls(str(d["profile"]), None if parent is None else int(parent), str(d.get("uuid") or ""),
                   int(d.get("memory_total_mib") or 0))


@dataclass(frozen=True)
class RunningRequest:
    """GPU work the source sees running on a node outside effopt's leases (a pod asking ``nvidia.com/gpu``).

    ``model`` is the leasable model it holds (a MIG request: ``mig-<profile>``; empty: the node's GPU model);
    ``gpus`` the device indices when known. ``lease_id``: the effopt lease the work runs under (such work is
    counted through its lease, never twice).
    """

    name: str
    num_gpu: int = 1
    gpu_milli: int = MILLI
    model: str = ""
    gpus: tuple[int, ...] = ()
    lease_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "num_gpu": self.num_gpu, "gpu_milli": self.gpu_milli, "model": self.model,
                "gpus": list(self.gpus), "lease_id": self.lease_id}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunningRequest:
        return cls(str(d["name"]), int(d.get("num_gpu", 1)), int(d.get("gpu_milli", MILLI)), str(d.get("model") or ""),
                   tuple(int(g) for g in d.get("gpus") or ()), str(d.get("lease_id") or ""))


@dataclass(frozen=True)
class InventoryNode:
    """A machine with GPUs (CPU in milli-cores and memory in MiB where known, else 0)."""

    name: str
    gpus: tuple[GpuDevice, ...] = ()
    mig: tuple[MigSlice, ...] = ()
    running: tuple[RunningRequest, ...] = ()
    cpu_milli: int = 0
    memory_mib: int = 0

    def __post_init__(self) -> None:
        if not self.name:
            raise InventoryError("a GPU node needs a name")
        indices = [g.index for g in self.gpus]
        if len(set(indices)) != len(indices):
            raise InventoryError(f"node {self.name!r}: GPU index {next(i for i in indices if indices.count(i) > 1)} "
                                 "appears twice")
        if any(i < 0 for i in indices):
            raise InventoryError(f"node {self.name!r}: GPU indices must be >= 0")

    def units(self) -> dict[str, list[tuple[int, str]]]:
        """Leasable units by model: ``{model: [(device index or slice position, uuid), ...]}``."""
        out: dict[str, list[tuple[int, str]]] = {}
        for g in sorted(self.gpus, key=lambda g: g.index):
            if not g.mig_enabled:
                out.setdefault(g.model, []).append((g.index, g.uuid))
        by_profile: dict[str, list[MigSlice]] = {}
        for s in self.mig:
            by_profile.setdefault(s.model, []).append(s)
        for model, slices in by_profile.items():
            out[model] = [(i, s.uuid) for i, s in enumerate(slices)]
        return out

    def memory_of(self, model: str) -> int:
        """Memory (MiB) of one unit of ``model`` on this node; 0 when unknown."""
        mem = [g.memory_total_mib for g in self.gpus if g.model == model and not g.mig_enabled]
        mem += [s.memory_total_mib for s in self.mig if s.model == model]
        if mem and all(mem):
            return min(mem)
        if model.startswith(MIG_PREFIX):  # the profile says it: 3g.20gb has 20 GB
            m = re.search(r"(\d+)gb$", model)
            return int(m.group(1)) * 1024 if m else 0
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cpu_milli": self.cpu_milli, "memory_mib": self.memory_mib,
                "gpus": [g.to_dict() for g in self.gpus], "mig": [s.to_dict() for s in self.mig],
                "running": [r.to_dict() for r in self.running]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InventoryNode:
        return cls(str(d["name"]), tuple(GpuDevice.from_dict(g) for g in d.get("gpus") or ()),
                   tuple(MigSlice.from_dict(s) for s in d.get("mig") or ()),
                   tuple(RunningRequest.from_dict(r) for r in d.get("running") or ()),
                   int(d.get("cpu_milli") or 0), int(d.get("memory_mib") or 0))


@dataclass(frozen=True)
class Inventory:
    """The GPU nodes a source found (nodes without GPUs are left out) and how it was read."""

    nodes: tuple[InventoryNode, ...]
    source: str
    detail: str = ""
    taken_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise InventoryError(f"node {twice!r} appears twice in the inventory")

    @classmethod
    def of(cls, nodes: Iterable[InventoryNode], source: str, detail: str = "") -> Inventory:
        """Keeps only the nodes with a GPU or a MIG slice."""
        return cls(tuple(n for n in nodes if n.gpus or n.mig), source, detail)

    @property
    def empty(self) -> bool:
        return not self.nodes

    def models(self) -> dict[str, int]:
        """Leasable units per model, over every node (MIG slices under ``mig-<profile>``)."""
        out: dict[str, int] = {}
        for node in self.nodes:
            for model, units in node.units().items():
                out[model] = out.get(model, 0) + len(units)
        return dict(sorted(out.items()))

    @property
    def gpu_count(self) -> int:
        """Leasable units (whole GPUs and MIG slices) in all."""
        return sum(self.models().values())

    def node(self, name: str) -> InventoryNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def describe(self) -> str:
        """``2 GPUs on 1 node: 2 x T4`` or ``no GPUs in the inventory``."""
        if self.empty:
            return "no GPUs in the inventory"
        models = ", ".join(f"{n} x {m}" for m, n in self.models().items())
        count, nodes = self.gpu_count, len(self.nodes)
        return f"{count} GPU{'s' if count != 1 else ''} on {nodes} node{'s' if nodes != 1 else ''}: {models}"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "detail": self.detail, "taken_at": self.taken_at, "gpus": self.gpu_count,
                "models": self.models(), "nodes": [n.to_dict() for n in self.nodes]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Inventory:
        return cls(tuple(InventoryNode.from_dict(n) for n in d.get("nodes") or ()), str(d.get("source") or ""),
                   str(d.get("detail") or ""), float(d.get("taken_at") or time.time()))


class InventorySource(ABC):
    """Reads an :class:`Inventory`. Raises :class:`InventoryError` (bad input) or :class:`InventoryUnavailable`."""

    kind = ""

    @abstractmethod
    def read(self) -> Inventory:
        """The GPUs as the source sees them now."""
