"""The one list-scheduling rule, shared by the planner, the local executor and the Airflow compiler.

Ready nodes start in the order of their remaining path (the longest chain of
costs from the node to the end, itself included), longest first, as long as
they fit the capacity (GPUs, CPU cores, memory, workers).  A ``parallel=False``
node starts only when nothing else runs, and nothing starts beside it.

:func:`plan` asks for one stage at a time (nothing running in between);
:func:`run_local` asks whenever a node finishes; the compiler uses
:func:`remaining_cost` as the tasks' priority weights, so Airflow's own
scheduler follows the same order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
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


def needs(node: Node) -> dict[str, float]:
    """What ``node`` holds while it runs, by capacity key."""
    r = node.resources
    return {"gpu": float(r.gpu), "cpu": r.cpu, "memory_mb": r.memory_mb, "gpu_memory_mb": r.gpu_memory_mb}


def remaining_cost(graph: ComputationGraph, order: list[str] | None = None) -> dict[str, float]:
    """Per node, the longest path of costs from it to the end of the graph, its own cost included."""
    bottom: dict[str, float] = {}
    for nid in reversed(order if order is not None else graph.topological_order()):
        bottom[nid] = graph.nodes[nid].cost + max((bottom[d] for d in graph.dependents(nid)), default=0.0)
    return bottom


def check_capacity(graph: ComputationGraph, cap: Capacity) -> None:
    """Raise GraphValidationError (kind ``capacity``) for a capacity that is not a finite number >= 0, or for a
    node that needs more than it alone (it could never start)."""
    limits = cap.limits()
    problems = [Problem("capacity", f"capacity {key}={limit!r} must be a finite number >= 0")
                for key, limit in limits.items()
                if not (isinstance(limit, (int, float)) and math.isfinite(limit) and limit >= 0)]
    if problems:
        raise GraphValidationError(problems)
    for node in graph.nodes.values():
        need = needs(node)
        for key, limit in limits.items():
            if need[key] > limit:
                problems.append(Problem("capacity", f"node {show(node.id)} needs {key}={need[key]:g} but the "
                                                    f"capacity is {limit:g}", (node.id,)))
    if cap.workers is not None and cap.workers < 1:
        problems.append(Problem("capacity", f"capacity workers={cap.workers} must be at least 1"))
    if problems:
        raise GraphValidationError(problems)


class ListScheduler:
    """Which nodes may start now, given what runs; see the module docstring for the rule.

    ``start()`` returns the nodes to start now (they count as running), ``finish(node)`` releases a node's
    capacity and readies its dependents; ``done`` once every node finished.  ``max_running`` caps how many
    run at once (the capacity's ``workers`` caps it too).
    """

    def __init__(self, graph: ComputationGraph, capacity: Capacity, *, max_running: int | None = None) -> None:
        check_capacity(graph, capacity)
        self.graph = graph
        self.order = graph.topological_order()
        self.index = {nid: i for i, nid in enumerate(self.order)}
        self.bottom = remaining_cost(graph, self.order)
        self.limits = capacity.limits()
        caps = [c for c in (capacity.workers, max_running) if c is not None]
        self.max_running = min(caps) if caps else None
        self.waiting = {nid: len(graph.dependencies(nid)) for nid in self.order}
        self.ready = [nid for nid in self.order if self.waiting[nid] == 0]
        self.used = dict.fromkeys(self.limits, 0.0)
        self.exclusive: str | None = None
        self.running = 0
        self.finished = 0

    @property
    def done(self) -> bool:
        return self.finished == len(self.order)

    def start(self) -> list[str]:
        """The ready nodes to start now, given those already running."""
        running = self.running
        self.ready.sort(key=lambda n: (-self.bottom[n], self.index[n]))
        started: list[str] = []
        for nid in self.ready:
            if self.exclusive is not None:
                break
            node = self.graph.nodes[nid]
            if not node.parallel:
                if running or started:
                    continue  # it waits until nothing else runs; others may go meanwhile
                started.append(nid)
                self.exclusive = nid
                break
            if self.max_running is not None and running + len(started) >= self.max_running:
                break
            need = needs(node)
            if all(self.used[k] + need[k] <= self.limits[k] for k in self.limits):
                started.append(nid)
                for k in self.limits:
                    self.used[k] += need[k]
        if started:
            chosen = set(started)
            self.ready = [n for n in self.ready if n not in chosen]
            self.running += len(started)
        return started

    def finish(self, nid: str) -> None:
        """``nid`` is done: its capacity is free again and its dependents may become ready."""
        if self.exclusive == nid:
            self.exclusive = None
        else:
            need = needs(self.graph.nodes[nid])
            for k in self.limits:
                self.used[k] -= need[k]
        self.running -= 1
        self.finished += 1
        for dep in self.graph.dependents(nid):
            self.waiting[dep] -= 1
            if self.waiting[dep] == 0:
                self.ready.append(dep)
