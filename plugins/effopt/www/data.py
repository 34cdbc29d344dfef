"""What the effopt pages show, read from the effopt store and the cache, filtered by what the user may read.

Every function takes the logged-in user and returns plain JSON-able data; the
HTML page (:mod:`effopt.www.page`) and the JSON API (:mod:`effopt.www.app`)
show the same data.  Task rows are shown for DAGs the user may read; a
Kubernetes right-sizing change or plan item for users who may read the
``effopt_rightsizing`` DAG that made it (an Airflow task's resources also
need read access to that task's DAG); the waste report for users who may
read ``effopt_waste_report``.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from effopt.units import DAY

RIGHTSIZING_DAG = "effopt_rightsizing"
WASTE_DAG = "effopt_waste_report"
#: Tries per task drawn in the sparklines (the newest).
SPARK_POINTS = 40


def readable(user: Any, dag_ids: Iterable[str]) -> set[str]:
    """The DAG ids in ``dag_ids`` that ``user`` may read."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    manager = get_auth_manager()
    return {d for d in set(dag_ids) if manager.is_authorized_dag(method="GET", user=user, details=DagDetails(id=d))}


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def task_summary(user: Any, dag_id: str | None = None, days: float = 30.0) -> list[dict[str, Any]]:
    """Per (dag, task) over the last ``days``: tries, successful runs, medians over the successful tries,
    CPU utilisation, the largest peak RSS, the last state, the hosts that ran it, and the newest tries for the
    sparklines."""
    from effopt.airflow_settings import get_store

    records = get_store().task_usage(dag_id=dag_id, since=time.time() - days * DAY)
    allowed = readable(user, {r.dag_id for r in records})
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for r in records:
        if r.dag_id in allowed:
            groups[(r.dag_id, r.task_id)].append(r)
    rows = []
    for (dag, task), recs in sorted(groups.items()):
        ok = [r for r in recs if r.state == "success"]
        wall, cpu = sum(r.wall_s for r in ok), sum(r.cpu_s for r in ok)
        rows.append({
            "dag_id": dag,
            "task_id": task,
            "runs": len({(r.run_id, r.map_index) for r in recs}),
            "tries": len(recs),
            "successes": len(ok),
            "failures": sum(1 for r in recs if r.state == "failed"),
            "median_wall_s": _median([r.wall_s for r in ok]),
            "median_cpu_s": _median([r.cpu_s for r in ok]),
            "cpu_utilisation": round(cpu / wall, 3) if wall > 0 else None,
            "max_peak_rss_bytes": max(r.peak_rss_bytes for r in recs),
            "last_state": recs[-1].state,
            "last_end": recs[-1].end,
            # The workers that ran it (Airflow's host name of each try), so a scaled-out fleet shows where.
            "hosts": sorted({r.hostname for r in recs if r.hostname}),
            "history": [{"start": r.start, "peak_rss_bytes": r.peak_rss_bytes, "cpu_s": round(r.cpu_s, 3),
                         "state": r.state, "hostname": r.hostname} for r in recs[-SPARK_POINTS:]],
        })
    return rows


def cache_summary() -> dict[str, Any]:
    """Hits, hit rate and time saved per function (readable names), and which backend."""
    from effopt.cache.report import summarize
    from effopt.hooks.cache import CacheHook

    backend = CacheHook().get_backend()
    summary = summarize(backend.read_stats(None))
    summary["backend"] = backend.describe()
    return summary


def applied_changes(user: Any, days: float = 30.0) -> list[dict[str, Any]]:
    """Resource changes applied in the last ``days`` (newest first) that ``user`` may see."""
    from effopt.airflow_settings import get_store
    from effopt.rightsizing.apply.model import AIRFLOW_TASK_KIND

    records = get_store().rightsizing_audit(since=time.time() - days * DAY)
    task_dags = {r.namespace for r in records if r.kind == AIRFLOW_TASK_KIND}
    allowed = readable(user, task_dags | {RIGHTSIZING_DAG})
    if RIGHTSIZING_DAG not in allowed:
        return []
    return [
        {"applied_at": r.applied_at, "mode": r.mode, "kind": r.kind, "namespace": r.namespace, "name": r.name,
         "container": r.container, "before": r.before, "after": r.after, "reason": r.reason,
         "monthly_cost_delta": r.monthly_cost_delta, "resource_version": r.resource_version}
        for r in reversed(records)
        if r.kind != AIRFLOW_TASK_KIND or r.namespace in allowed
    ]


def latest_plan(user: Any) -> dict[str, Any] | None:
    """The newest right-sizing plan: when, from which source, its summary and the items ``user`` may see."""
    from effopt.airflow_settings import get_store
    from effopt.rightsizing.apply.model import AIRFLOW_TASK_KIND

    row = get_store().latest_rightsizing_plan()
    if row is None:
        return None
    items = row["result"].get("plan", {}).get("items", [])
    task_dags = {i["workload"]["namespace"] for i in items if i["workload"]["kind"] == AIRFLOW_TASK_KIND}
    allowed = readable(user, task_dags | {row["dag_id"]})
    if row["dag_id"] not in allowed:
        return None
    shown = [i for i in items if i["workload"]["kind"] != AIRFLOW_TASK_KIND or i["workload"]["namespace"] in allowed]
    deltas = [i["monthly_cost_delta"] for i in shown if i["action"] == "apply" and i["monthly_cost_delta"] is not None]
    return {"created_at": row["created_at"], "dag_id": row["dag_id"], "run_id": row["run_id"],
            "source": row["source"], "recommender": row["recommender"], "summary": row["result"].get("summary"),
            "skipped": len(row["result"].get("skipped", [])), "items": shown,
            "monthly_cost_delta": round(sum(deltas), 2) if deltas else None}


def latest_waste_report(user: Any, report_id: int | None = None, *, html: bool = False) -> dict[str, Any] | None:
    """The newest rendered waste report (or ``report_id``): totals, top findings, delivery, and its HTML when
    asked; None when there is none or ``user`` may not read the DAG that made it."""
    from effopt.airflow_settings import get_store

    row = get_store().rendered_report(report_id, "waste", html=html)
    if row is None or row["dag_id"] not in readable(user, {row["dag_id"]}):
        return None
    summary = row["summary"]
    out = {"id": row["id"], "created_at": row["created_at"], "dag_id": row["dag_id"], "run_id": row["run_id"],
           "totals": summary.get("totals", {}), "window": summary.get("window"), "source": summary.get("source"),
           "findings": summary.get("findings", [])[:5], "delivery": row["delivery"],
           "page": f"/effopt/reports/waste/{row['id']}"}
    if html:
        out["html"] = row["html"]
    return out
