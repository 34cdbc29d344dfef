"""Property tests on random graphs with duplicates: optimisations keep the outputs and merge every duplicate."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from effopt.graph import ComputationGraph, Node, cse, cull, fuse, optimize, plan, run_local
from effopt.graph.validate import check

FNS: dict[str, tuple[str, list[str], int]] = {
    "add": ("tests.graph.graph_fns.add", ["a", "b"], 1),
    "mul": ("tests.graph.graph_fns.mul", ["a", "b"], 1),
    "mix": ("tests.graph.graph_fns.mix", ["a"], 1),
    "pair": ("tests.graph.graph_fns.pair", ["a"], 2),
}


@st.composite
def random_graphs(draw: st.DrawFn, max_nodes: int = 24) -> tuple[ComputationGraph, dict[str, int]]:
    """A random DAG where about a third of the nodes duplicate an earlier one.

    A duplicate reads the same data or data equal to it (outputs of earlier
    duplicates), so merges must happen transitively.  Some nodes are impure
    (never merged) and some run alone.
    """
    inputs = [f"in{i}" for i in range(draw(st.integers(1, 3)))]
    equal: dict[str, list[str]] = {name: [name] for name in inputs}  # data -> data with the same value
    available = list(inputs)
    written: list[tuple[str, dict[str, Any], dict[str, str], list[str]]] = []
    nodes = []
    for i in range(draw(st.integers(1, max_nodes))):
        if written and draw(st.integers(0, 9)) < 4:
            fn, params, source_inputs, source_outputs = draw(st.sampled_from(written))
            node_inputs = {arg: draw(st.sampled_from(equal[d])) for arg, d in source_inputs.items()}
            outputs = [f"d{i}_{j}" for j in range(len(source_outputs))]
            for new, old in zip(outputs, source_outputs, strict=True):
                equal[old].append(new)
                equal[new] = equal[old]
        else:
            fn, args, count = FNS[draw(st.sampled_from(sorted(FNS)))]
            node_inputs = {
                arg: draw(st.sampled_from(available)) for j, arg in enumerate(args) if j == 0 or draw(st.booleans())
            }
            params = {"k": draw(st.integers(0, 3))}
            outputs = [f"d{i}_{j}" for j in range(count)]
            for name in outputs:
                equal[name] = [name]
        nodes.append(
            Node(
                f"n{i}",
                fn,
                node_inputs,
                tuple(outputs),
                params,
                cost=draw(st.sampled_from([0.1, 0.5, 1.0, 3.0])),
                pure=draw(st.integers(0, 9)) > 0,
                parallel=draw(st.integers(0, 9)) > 0,
            )
        )
        written.append((fn, params, dict(node_inputs), outputs))
        available += outputs
    produced = [d for n in nodes for d in n.outputs]
    requested = draw(st.lists(st.sampled_from(produced), min_size=1, max_size=4, unique=True))
    values = {name: draw(st.integers(0, 1000)) for name in inputs}
    return ComputationGraph.from_nodes("random", nodes, inputs, requested), values


def oracle_merge_count(graph: ComputationGraph) -> int:
    """How many nodes pairwise merging to a fixpoint removes (the slow, obviously right way)."""
    nodes = dict(graph.nodes)
    rename: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        ids = list(nodes)
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                na, nb = nodes[a], nodes[b]
                if not (na.pure and nb.pure) or (na.fn, na.params, len(na.outputs)) != (
                    nb.fn,
                    nb.params,
                    len(nb.outputs),
                ):
                    continue
                ia = {k: rename.get(v, v) for k, v in na.inputs.items()}
                ib = {k: rename.get(v, v) for k, v in nb.inputs.items()}
                if ia == ib:
                    keep, drop = (
                        (a, b) if graph.topological_order().index(a) < graph.topological_order().index(b) else (b, a)
                    )
                    for x, y in zip(nodes[drop].outputs, nodes[keep].outputs, strict=True):
                        rename[x] = y
                    for k, v in list(rename.items()):
                        rename[k] = rename.get(v, v)
                    del nodes[drop]
                    changed = True
                    break
            if changed:
                break
    return len(graph) - len(nodes)


SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(random_graphs(), st.sampled_from([None, 0.5, 1.0, 5.0]), st.integers(1, 4))
def test_optimised_graph_yields_exactly_the_requested_outputs(case, fuse_max_cost, workers):
    graph, values = case
    expected = run_local(graph, values, workers=workers)
    optimized, report = optimize(graph, fuse_max_cost=fuse_max_cost)
    assert set(expected) == set(graph.outputs)
    assert run_local(optimized, values, workers=workers) == expected
    assert report.nodes_after == len(optimized) <= len(graph)


@SETTINGS
@given(random_graphs())
def test_cse_merges_every_duplicate_transitively_and_is_idempotent(case):
    graph, _ = case
    once, report = cse(graph)
    assert len(report.merged) == len(graph) - len(once) == oracle_merge_count(graph)
    twice, again = cse(once)
    assert twice == once
    assert again.merged == []
    impure = {n.id for n in graph.nodes.values() if not n.pure}
    assert impure <= set(once.nodes), "an impure node was merged"


@SETTINGS
@given(random_graphs(), st.sampled_from([None, 0.5, 5.0]))
def test_no_cycle_introduced_and_no_requested_output_lost(case, fuse_max_cost):
    graph, _ = case
    optimized, _ = optimize(graph, fuse_max_cost=fuse_max_cost)
    assert check(optimized) == []  # acyclic, every input produced, functions resolve
    assert optimized.outputs == graph.outputs
    for name in graph.outputs:
        assert optimized.resolve(name) in optimized.producers
    the_plan = plan(optimized)
    placed = [nid for stage in the_plan.stages for nid in stage]
    assert sorted(placed) == sorted(optimized.nodes)
    position = the_plan.stage_of()
    for producer, consumer, _ in optimized.data_edges():
        assert position[producer] < position[consumer]


@SETTINGS
@given(random_graphs(), st.sampled_from([0.5, 1.0, 5.0]))
def test_cull_and_fuse_account_for_every_node(case, max_cost):
    graph, _ = case
    merged, _ = cse(graph)
    culled, cull_report = cull(merged)
    fused, fuse_report = fuse(culled, max_cost)
    assert {c.node for c in cull_report.culled} == set(merged.nodes) - set(culled.nodes)
    origins = [o for n in fused.nodes.values() for o in (n.fused_from or (n.id,))]
    assert sorted(origins) == sorted(culled.nodes)
    for fusion in fuse_report.fused:
        assert len(fusion.nodes) >= 2
        assert all(culled.nodes[nid].cost <= max_cost and culled.nodes[nid].parallel for nid in fusion.nodes)
