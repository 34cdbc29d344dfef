"""A compiled graph DAG in a real Airflow: triggered over REST, same outputs as the local executor."""

from __future__ import annotations

from pathlib import Path

import pytest

from effopt.graph import load_spec, optimize, run_local

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DAG = "effopt_graph_ml_models"


def test_compiled_dag_matches_the_local_executor_and_lacks_eliminated_nodes(airflow):
    client = airflow.client
    graph = load_spec(REPO / "include" / "graphs" / "ml_models.yaml")
    optimized, report = optimize(graph)
    conf = {"symbol": "AAPL", "limit": 3000}
    expected = run_local(optimized, conf)

    run_id, state = client.run_dag(DAG, conf)
    assert state == "success", client.failure_report(DAG, run_id)

    tasks = set(client.task_states(DAG, run_id))
    removed = {m.removed for m in report.merged} | {c.node for c in report.culled}
    assert removed, "the example is meant to have duplicates and an unused node"
    assert tasks.isdisjoint(removed), f"eliminated nodes became tasks: {tasks & removed}"
    assert {"load_prices", "ridge_features", "compare"} <= tasks

    producers = {name: node.id for node in optimized.nodes.values() for name in node.outputs}
    for output in graph.outputs:
        got = client.xcom(DAG, run_id, producers[output], key=output)
        assert _close(got, expected[output]), f"{output}: {got!r} != {expected[output]!r}"


def _close(got, want) -> bool:
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_close(got[k], want[k]) for k in want)
    if isinstance(want, (list, tuple)):
        return len(got) == len(want) and all(_close(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, float):
        return got == pytest.approx(want, rel=1e-9, abs=1e-12)
    return got == want
