"""The local executor: reference semantics, limits, failures, cache pass-through."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from effopt.graph import ComputationGraph, GraphInput, Node, NodeExecutionError, compile_graph, load_spec, run_local
from effopt.graph import examples as ex
from tests.graph import graph_fns
from tests.graph.conftest import SPECS

F = "tests.graph.graph_fns."


@pytest.fixture
def tracker() -> graph_fns.Tracker:
    graph_fns.TRACKER.__init__()
    return graph_fns.TRACKER


def fan(n: int, **node_kwargs: Any) -> list[Node]:
    return [
        Node(f"t{i}", F + "tracked", {"x": "x"}, (f"o{i}",), {"name": f"t{i}", "seconds": 0.1}, **node_kwargs)
        for i in range(n)
    ]


def test_seed_pipeline_equals_the_functions_called_by_hand():
    graph = load_spec(SPECS / "seed_pipeline.yaml")
    expected = ex.train_model(ex.compute_features(ex.load_data("IBM", limit=1000), window=20), alpha=1.0)
    assert run_local(graph, {"symbol": "IBM"}) == {"model": expected}
    default = run_local(graph)["model"]
    assert default == ex.train_model(ex.compute_features(ex.load_data("AAPL", limit=1000)))


def test_gpu_example_runs_on_the_cpu_without_a_gpu():
    graph = load_spec(SPECS / "gpu_training.yaml")
    result = run_local(graph, workers=2)["comparison"]
    assert set(result["ranking"]) == {"mlp", "mlp_wide", "ridge"}
    device = "gpu" if ex.array_module() is not np else "cpu"
    assert device == "cpu" or result["metrics"]["mlp"]["rows"] > 0
    model = ex.train_mlp({"x": np.ones((8, 2)) * np.arange(8)[:, None], "y": np.arange(8.0)}, epochs=5)
    assert model["device"] == device and model["kind"] == "mlp"


def test_inputs_missing_unknown_and_defaults():
    graph = load_spec(SPECS / "seed_pipeline.yaml")
    required = graph.replace(inputs=(GraphInput("symbol"),))
    with pytest.raises(ValueError, match="needs input\\(s\\) 'symbol'"):
        run_local(required)
    with pytest.raises(ValueError, match="unknown graph input\\(s\\) 'sym'"):
        run_local(graph, {"sym": "X"})


def test_failing_node_is_named_and_its_consumers_never_run(tracker):
    nodes = [
        Node("ok", F + "add", {"a": "x"}, ("y",)),
        Node("bad", F + "fail", {"a": "y"}, ("z",)),
        Node("after", F + "tracked", {"x": "z"}, ("w",), {"name": "after"}),
    ]
    graph = ComputationGraph.from_nodes("f", nodes, ["x"], ["w"])
    with pytest.raises(NodeExecutionError, match="node 'bad' failed: RuntimeError: boom on 1") as info:
        run_local(graph, {"x": 1}, workers=2)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert info.value.node_id == "bad"
    assert tracker.overlaps == {}


def test_wrong_number_of_return_values_is_named():
    graph = ComputationGraph.from_nodes("a", [Node("arity", F + "wrong_arity", {"a": "x"}, ("p", "q"))], ["x"], ["q"])
    with pytest.raises(
        NodeExecutionError, match="declares 2 outputs \\(p, q\\) but its function returned a tuple of length 3"
    ):
        run_local(graph, {"x": 1})


def test_parallel_false_nodes_run_alone(tracker):
    nodes = fan(4) + [Node("solo", F + "tracked", {"x": "x"}, ("s",), {"name": "solo", "seconds": 0.1}, parallel=False)]
    graph = ComputationGraph.from_nodes("alone", nodes, ["x"], [f"o{i}" for i in range(4)] + ["s"])
    assert run_local(graph, {"x": 1}, workers=4) == {**{f"o{i}": 2 for i in range(4)}, "s": 2}
    assert tracker.overlaps["solo"] == set()
    assert tracker.max_active > 1, "the parallel nodes should have run together"


def test_worker_limit_and_gpu_capacity(tracker):
    graph = ComputationGraph.from_nodes("limit", fan(5), ["x"], [f"o{i}" for i in range(5)])
    run_local(graph, {"x": 1}, workers=2)
    assert tracker.max_active == 2
    tracker.__init__()
    gpu = ComputationGraph.from_nodes("gpu", fan(3, resources={"gpu": 1}) + fan(0), ["x"], ["o0", "o1", "o2"])
    run_local(gpu, {"x": 1}, workers=3, capacity={"gpu": 1})
    assert tracker.max_active == 1
    tracker.__init__()
    run_local(gpu, {"x": 1}, workers=3, capacity={"gpu": 2})
    assert tracker.max_active == 2


def test_processes_give_the_same_outputs_as_threads():
    graph = compile_graph(load_spec(SPECS / "ml_models.yaml")).graph
    inputs = {"symbol": "ORCL", "limit": 600}
    threads = run_local(graph, inputs, workers=2)
    processes = run_local(graph, inputs, workers=2, mode="processes")
    assert processes == threads
    with pytest.raises(ValueError, match="mode must be"):
        run_local(graph, inputs, mode="fibers")


def test_progress_and_keep_all():
    graph = compile_graph(load_spec(SPECS / "ml_models.yaml")).graph
    seen: list[tuple[int, int, str]] = []
    values = run_local(graph, {"limit": 300}, keep_all=True, on_progress=lambda d, t, n, s: seen.append((d, t, n)))
    assert [d for d, _, _ in seen] == list(range(1, len(graph) + 1))
    assert {n for _, _, n in seen} == set(graph.nodes)
    assert {"prices", "ridge_raw_features", "ridge_train", "comparison"} <= set(values)
    assert isinstance(values["prices"], np.ndarray) and len(values["prices"]) == 300


class CountingCache:
    """A duck-typed computation cache: ``cached(version=...)`` returns a memoising decorator."""

    def __init__(self) -> None:
        self.entries: dict[tuple, Any] = {}
        self.hits = 0
        self.misses = 0
        self.versions: list[str | None] = []

    def cached(self, version: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        self.versions.append(version)

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(**kwargs: Any) -> Any:
                key = (fn.__module__, fn.__qualname__, version, repr(sorted(kwargs.items())))
                if key in self.entries:
                    self.hits += 1
                    return self.entries[key]
                self.misses += 1
                self.entries[key] = fn(**kwargs)
                return self.entries[key]

            return wrapper

        return decorator


def test_results_go_through_a_cache_object(tracker):
    nodes = [
        Node("a", F + "tracked", {"x": "x"}, ("y",), {"name": "a", "seconds": 0}, version="2"),
        Node("b", F + "add", {"a": "y"}, ("z",), {"k": 1}),
        Node("c", F + "mix", {"a": "z"}, ("w",), cost=0.1),
        Node("d", F + "mix", {"a": "w"}, ("v",), cost=0.1),
    ]
    graph = compile_graph(ComputationGraph.from_nodes("cached", nodes, ["x"], ["v"]), fuse_max_cost=0.5).graph
    assert any(n.fused_from == ("c", "d") for n in graph.nodes.values())
    cache = CountingCache()
    first = run_local(graph, {"x": 5}, cache=cache)
    assert (cache.hits, cache.misses) == (0, 4)
    assert "2" in cache.versions and None in cache.versions
    assert run_local(graph, {"x": 5}, cache=cache) == first
    assert (cache.hits, cache.misses) == (4, 4)
    assert set(tracker.overlaps) == {"a"}, "the cached node body ran only once"


def test_with_the_effopt_computation_cache(tmp_path, tracker):
    from effopt.cache import ComputationCache, LocalBackend

    cache = ComputationCache(
        LocalBackend(tmp_path / "cache"), secret=b"graph-test-secret-0123456789", namespace="graph"
    )
    graph = compile_graph(load_spec(SPECS / "ml_models.yaml")).graph
    first = run_local(graph, {"limit": 400}, cache=cache)
    second = run_local(graph, {"limit": 400}, cache=cache)
    assert json_equal(first, second)
    stats = cache.stats()
    assert stats["effopt.graph.examples.load_data"]["hits"] == 1
    assert stats["effopt.graph.examples.load_data"]["misses"] == 1
    assert sum(s["hits"] for s in stats.values()) == sum(s["misses"] for s in stats.values()) > 0


def json_equal(a: Any, b: Any) -> bool:
    import json

    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_the_graph_package_imports_no_airflow():
    import subprocess
    import sys

    code = ("import sys, effopt.graph, effopt.graph.examples, effopt.graph.dot, effopt.cli.graph; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'airflow'))")
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(SPECS.parents[1] / "plugins")},
    )
    assert done.stdout.strip() == "[]"
