"""Execution plans: parallel stages, critical path, estimated makespan.

Stages are built by the shared list-scheduling rule (:mod:`effopt.graph.schedule`):
each stage takes the ready nodes with the longest remaining path first, as long
as they fit the capacity (GPUs, CPU cores, memory, workers); a
``parallel=False`` node always gets a stage of its own.  The makespan estimate
assumes a barrier between stages (the sum of each stage's longest node), so it
is what ``stage_barriers=True`` would take and an upper bound for the
data-driven schedule; ``critical_path_s`` is the lower bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from effopt.graph.errors import GraphValidationError, Problem, show
from effopt.graph.model import ComputationGraph
from effopt.graph.schedule import Capacity, ListScheduler

__all__ = ["Capacity", "Plan", "plan"]


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


def plan(graph: ComputationGraph, capacity: Capacity | Mapping[str, Any] | None = None) -> Plan:
    """Plan ``graph`` within ``capacity`` (default: the spec's ``capacity``, else unlimited): one stage at a time,
    by the shared list-scheduling rule (:mod:`effopt.graph.schedule`), nothing running between stages.

    Raises GraphValidationError (kind ``capacity``) for nodes that need more than the capacity on their own.
    """
    cap = Capacity.coerce(capacity if capacity is not None else graph.settings.get("capacity"))
    scheduler = ListScheduler(graph, cap)
    stages: list[tuple[str, ...]] = []
    notes: list[str] = []
    while not scheduler.done:
        stage = scheduler.start()
        if not stage:  # unreachable for acyclic graphs (topological_order raised otherwise)
            held = [n for n in scheduler.order if scheduler.waiting[n] > 0]
            raise GraphValidationError(
                [Problem("cycle", f"nodes never became ready: {', '.join(show(n) for n in held)}", tuple(held))])
        if scheduler.exclusive is not None:
            notes.append(f"node {show(stage[0])} runs alone in stage {len(stages) + 1} (parallel=False)")
        stages.append(tuple(stage))
        for nid in stage:
            scheduler.finish(nid)
    critical = _critical_path(graph, scheduler.order, scheduler.bottom)
    serial = sum(n.cost for n in graph.nodes.values())
    makespan = sum(max(graph.nodes[n].cost for n in stage) for stage in stages)
    parallelism = serial / makespan if makespan > 0 else 1.0
    return Plan(
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
