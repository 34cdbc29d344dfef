"""Execution plans: parallel stages, critical path, estimated makespan.

Stages are built by list scheduling: each stage takes the ready nodes with the
longest remaining path first, as long as they fit the capacity (GPUs, CPU
cores, memory, workers); a ``parallel=False`` node always gets a stage of its
own.  The makespan estimate assumes a barrier between stages (the sum of each
stage's longest node), so it is what ``stage_barriers=True`` would take and an
upper bound for the data-driven schedule; ``critical_path_s`` is the lower bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from effopt.graph.errors import GraphValidationError, Problem, show
from effopt.graph.model import ComputationGraph, Node


@dataclass(frozen=True)
class Capacity:
    """What may run at once; None means unlimited."""

    gpu: float | None = None
    cpu: float | None = None
    memory_mb: float | None = None
    gpu_memory_mb: float | None = None
    workers: int | None = None

    @classmethod
    def coerce(cls, value: Capacity | Mapping[str, Any] | None) -> Capacity:
        if value is None:
            return cls()
        if isinstance(value, Capacity):
            return value
        return cls(**dict(value))

    def limits(self) -> dict[str, float]:
        return {
            k: v
            for k, v in (
                ("gpu", self.gpu),
                ("cpu", self.cpu),
                ("memory_mb", self.memory_mb),
                ("gpu_memory_mb", self.gpu_memory_mb),
            )
            if v is not None
        }


@dataclass(frozen=True)
class Plan:
    """Stages of node ids, the critical path and time estimates (seconds)."""

    stages: tuple[tuple[str, ...], ...]
    critical_path: tuple[str, ...]
    critical_path_s: float
    makespan_s: float
    serial_s: float
    parallelism: float
    notes: tuple[str, ...] = field(default=())

    def stage_of(self) -> dict[str, int]:
        return {nid: i for i, stage in enumerate(self.stages) for nid in stage}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = [list(s) for s in self.stages]
        data["critical_path"] = list(self.critical_path)
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            tuple(tuple(s) for s in data["stages"]),
            tuple(data["critical_path"]),
            data["critical_path_s"],
            data["makespan_s"],
            data["serial_s"],
            data["parallelism"],
            tuple(data.get("notes", ())),
        )


def plan(
    graph: ComputationGraph, capacity: Capacity | Mapping[str, Any] | None = None
) -> tuple[ComputationGraph, Plan]:
    """Plan ``graph`` (unchanged) within ``capacity`` (default: the spec's ``capacity``, else unlimited).

    Raises GraphValidationError (kind ``capacity``) for nodes that need more
    than the capacity on their own.
    """
    cap = Capacity.coerce(capacity if capacity is not None else graph.settings.get("capacity"))
    limits = cap.limits()
    problems = [Problem("capacity", f"capacity {key}={limit!r} must be a finite number >= 0")
                for key, limit in limits.items()
                if not (isinstance(limit, (int, float)) and math.isfinite(limit) and limit >= 0)]
    if problems:
        raise GraphValidationError(problems)
    for node in graph.nodes.values():
        need = _needs(node)
        for key, limit in limits.items():
            if need[key] > limit:
                problems.append(
                    Problem(
                        "capacity",
                        f"node {show(node.id)} needs {key}={need[key]:g} but the capacity is {limit:g}",
                        (node.id,),
                    )
                )
    if cap.workers is not None and cap.workers < 1:
        problems.append(Problem("capacity", f"capacity workers={cap.workers} must be at least 1"))
    if problems:
        raise GraphValidationError(problems)

    order = graph.topological_order()
    index = {nid: i for i, nid in enumerate(order)}
    bottom: dict[str, float] = {}  # longest path from a node to the end, itself included
    for nid in reversed(order):
        after = max((bottom[d] for d in graph.dependents(nid)), default=0.0)
        bottom[nid] = graph.nodes[nid].cost + after
    waiting = {nid: len(graph.dependencies(nid)) for nid in order}
    ready = [nid for nid in order if waiting[nid] == 0]
    stages: list[tuple[str, ...]] = []
    notes: list[str] = []
    while ready:
        ready.sort(key=lambda n: (-bottom[n], index[n]))
        stage: list[str] = []
        used = dict.fromkeys(limits, 0.0)
        for nid in ready:
            node = graph.nodes[nid]
            if not node.parallel:
                if not stage:
                    stage = [nid]
                    notes.append(f"node {show(nid)} runs alone in stage {len(stages) + 1} (parallel=False)")
                    break
                continue
            if cap.workers is not None and len(stage) >= cap.workers:
                break
            need = _needs(node)
            if all(used[k] + need[k] <= limits[k] for k in limits):
                stage.append(nid)
                for k in limits:
                    used[k] += need[k]
        placed = set(stage)
        ready = [nid for nid in ready if nid not in placed]
        stages.append(tuple(stage))
        for nid in stage:
            for dep in graph.dependents(nid):
                waiting[dep] -= 1
                if waiting[dep] == 0:
                    ready.append(dep)
    scheduled = {n for stage in stages for n in stage}
    held = [n for n in order if n not in scheduled]
    if held:  # unreachable for acyclic graphs (topological_order raised otherwise)
        raise GraphValidationError(
            [Problem("cycle", f"nodes never became ready: {', '.join(show(n) for n in held)}", tuple(held))]
        )
    critical = _critical_path(graph, order, bottom)
    serial = sum(n.cost for n in graph.nodes.values())
    makespan = sum(max(graph.nodes[n].cost for n in stage) for stage in stages)
    parallelism = serial / makespan if makespan > 0 else 1.0
    return graph, Plan(
        tuple(stages),
        tuple(critical),
        _round(sum(graph.nodes[n].cost for n in critical)),
        _round(makespan),
        _round(serial),
        round(parallelism, 4),
        tuple(notes),
    )


def _round(x: float) -> float:
    return round(x, 6) if math.isfinite(x) else x


def _needs(node: Node) -> dict[str, float]:
    r = node.resources
    return {"gpu": float(r.gpu), "cpu": r.cpu, "memory_mb": r.memory_mb, "gpu_memory_mb": r.gpu_memory_mb}


def _critical_path(graph: ComputationGraph, order: list[str], bottom: Mapping[str, float]) -> list[str]:
    if not order:
        return []
    index = {nid: i for i, nid in enumerate(order)}
    starts = [nid for nid in order if not graph.dependencies(nid)]
    current = max(starts, key=lambda n: (bottom[n], -index[n]))
    path = [current]
    while graph.dependents(current):
        current = max(graph.dependents(current), key=lambda n: (bottom[n], -index[n]))
        path.append(current)
    return path
