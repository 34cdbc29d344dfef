"""A compiled graph DAG in a real Airflow: triggered over REST, same outputs as the local executor."""

from __future__ import annotations

import os
import time
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


def test_maintenance_dag_removes_graph_runs_past_retention_over_rest(airflow):
    """effopt_maintenance, triggered over REST, prunes [effopt] graph_storage (the default under AIRFLOW_HOME)."""
    client = airflow.client
    # Unpausing a @daily DAG schedules its latest interval too: let that run finish before the probe exists.
    first, state = client.run_dag("effopt_maintenance", {"dry_run": True})
    assert state == "success", client.failure_report("effopt_maintenance", first)
    deadline = time.monotonic() + 240
    while any(client.get("/api/v2/dags/effopt_maintenance/dagRuns", state=st)["total_entries"]
              for st in ("queued", "running")):
        assert time.monotonic() < deadline, "effopt_maintenance runs did not finish"
        time.sleep(1)

    base = airflow.home / "effopt-graph-data" / "effopt_graph_retention_probe"
    old = base / "old_run" / "load" / "prices.npy"
    new = base / "new_run" / "load" / "prices.npy"
    for path, age_days in ((old, 30), (new, 0)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 2048)
        t = time.time() - age_days * 86400
        os.utime(path, (t, t))

    dry_run, state = client.run_dag("effopt_maintenance", {"dry_run": True})
    assert state == "success", client.failure_report("effopt_maintenance", dry_run)
    preview = client.xcom("effopt_maintenance", dry_run, "prune_graph_values")
    assert old.exists() and preview["dry_run"] is True
    assert any(r["path"].endswith("effopt_graph_retention_probe/old_run") for r in preview["removed"])

    run_id, state = client.run_dag("effopt_maintenance")
    assert state == "success", client.failure_report("effopt_maintenance", run_id)
    report = client.xcom("effopt_maintenance", run_id, "prune_graph_values")
    assert not old.parent.parent.exists() and new.exists()
    assert report["retention_days"] == 7.0 and report["errors"] == []
    removed = [r for r in report["removed"] if r["path"].endswith("effopt_graph_retention_probe/old_run")]
    assert len(removed) == 1 and removed[0]["files"] == 1 and removed[0]["bytes"] == 2048


def _close(got, want) -> bool:
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_close(got[k], want[k]) for k in want)
    if isinstance(want, (list, tuple)):
        return len(got) == len(want) and all(_close(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, float):
        return got == pytest.approx(want, rel=1e-9, abs=1e-12)
    return got == want
