"""The local executor: run a graph in this process (threads) or in worker processes.

Nodes start as soon as their inputs exist, by the rule the planner uses
(:mod:`effopt.graph.schedule`): longest remaining path first, within the worker
limit and the capacity (GPUs, CPU cores, memory); a ``parallel=False`` node runs
with nothing else running.  Intermediate values
are dropped as soon as their last reader has run.  This is the reference
semantics the Airflow compiler follows.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Any

from effopt.graph.errors import show
from effopt.graph.model import ComputationGraph, Node, call_node
from effopt.graph.schedule import Capacity, ListScheduler

#: on_progress(done, total, node_id, seconds)
Progress = Callable[[int, int, str, float], None]


class NodeExecutionError(RuntimeError):
    """A node's function raised; ``node_id`` names it and the cause is chained."""

    def __init__(self, node_id: str, cause: BaseException) -> None:
        self.node_id = node_id
        super().__init__(f"node {show(node_id)} failed: {type(cause).__name__}: {cause}")


def graph_inputs(graph: ComputationGraph, supplied: Mapping[str, Any] | None) -> dict[str, Any]:
    """The graph inputs: supplied values, else defaults; raises ValueError naming missing or unknown ones."""
    supplied = dict(supplied or {})
    unknown = sorted(set(supplied) - graph.input_names)
    if unknown:
        known = ", ".join(sorted(graph.input_names)) or "none"
        raise ValueError(f"unknown graph input(s) {', '.join(show(u) for u in unknown)}; graph inputs: {known}")
    values = {}
    missing = []
    for item in graph.inputs:
        if item.name in supplied:
            values[item.name] = supplied[item.name]
        elif item.required:
            missing.append(item.name)
        else:
            values[item.name] = item.default
    if missing:
        raise ValueError(f"graph {show(graph.name)} needs input(s) {', '.join(show(m) for m in missing)} (no default)")
    return values


def _call(node: Node, values: dict[str, Any], cache: Any) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    outputs = call_node(node, values, cache)
    return outputs, time.perf_counter() - start


def _executor(mode: str, workers: int) -> Executor:
    if mode == "threads":
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="effopt-graph")
    if mode == "processes":
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))
    raise ValueError(f"mode must be 'threads' or 'processes', not {mode!r}")


def run_local(
    graph: ComputationGraph,
    inputs: Mapping[str, Any] | None = None,
    *,
    workers: int | None = None,
    mode: str = "threads",
    cache: Any = None,
    capacity: Capacity | Mapping[str, Any] | None = None,
    on_progress: Progress | None = None,
    keep_all: bool = False,
) -> dict[str, Any]:
    """Run ``graph`` and return its requested outputs by name (every value with ``keep_all``).

    Nodes start by the shared list-scheduling rule (:mod:`effopt.graph.schedule`) whenever one finishes.
    ``mode`` is ``threads`` or ``processes`` (functions, values and ``cache`` must then pickle).  ``cache``
    is an object with a ``cached(version=...)`` decorator factory (e.g.
    :class:`effopt.cache.ComputationCache`); every function call goes through it.  ``capacity`` defaults to
    the spec's.  Raises :class:`NodeExecutionError` when a node fails (nothing new starts after a failure).
    """
    values: dict[str, Any] = graph_inputs(graph, inputs)
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    cap = Capacity.coerce(capacity if capacity is not None else graph.settings.get("capacity"))
    scheduler = ListScheduler(graph, cap, max_running=workers)
    drop = _Dropper(graph, keep_all)
    running: dict[Future[tuple[dict[str, Any], float]], str] = {}
    with _executor(mode, min(workers, scheduler.max_running or workers)) as pool:
        try:
            while not scheduler.done:
                for nid in scheduler.start():
                    node = graph.nodes[nid]
                    args = {data: values[data] for data in node.inputs.values()}
                    running[pool.submit(_call, node, args, cache)] = nid
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in finished:
                    nid = running.pop(future)
                    try:
                        outputs, seconds = future.result()
                    except Exception as exc:
                        raise NodeExecutionError(nid, exc) from exc
                    values.update(outputs)
                    scheduler.finish(nid)
                    if on_progress is not None:
                        on_progress(scheduler.finished, len(scheduler.order), nid, seconds)
                    drop.after(graph.nodes[nid], values)
        except BaseException:
            for future in running:
                future.cancel()
            raise
    if keep_all:
        return values
    return {name: values[data] for name, data in graph.requested.items()}


class _Dropper:
    """Drops an intermediate value once its last reader has run (unless every value is kept)."""

    def __init__(self, graph: ComputationGraph, keep_all: bool) -> None:
        self.keep_all = keep_all
        self.readers = {data: len(ids) for data, ids in graph.consumers.items()}
        self.keep = set(graph.requested.values()) | graph.input_names

    def after(self, node: Node, values: dict[str, Any]) -> None:
        if self.keep_all:
            return
        for data in dict.fromkeys(node.inputs.values()):
            self.readers[data] -= 1
            if self.readers[data] == 0 and data not in self.keep:
                values.pop(data, None)
