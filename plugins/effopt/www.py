"""The effopt pages of the Airflow UI, served by the API server at ``/effopt``.

Every route requires Airflow authentication (the UI's session cookie or a
``Bearer`` token from ``POST /auth/token``), and task usage is shown only for
DAGs the user may read.

- ``/effopt/``: measured usage per task, the computation cache's hits and
  time saved, and the resource changes right-sizing applied, as an HTML page
  (also embedded in the UI's navigation as "effopt").
- ``/effopt/api/task-usage``: the same task summary as JSON.
- ``/effopt/api/cache``: the cache summary as JSON.
- ``/effopt/api/rightsizing``: the right-sizing audit (applied changes) as
  JSON.  Kubernetes changes are shown to users who may read the
  ``effopt_rightsizing`` DAG that made them; changes to an Airflow task's
  resources also need read access to that task's DAG.
"""

from __future__ import annotations

import html
import statistics
import time
from collections import defaultdict
from typing import Any

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse

app = FastAPI(title="effopt", description="effopt: measured task usage and computation-cache savings")


def _readable(user: Any, dag_ids: set[str]) -> set[str]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    manager = get_auth_manager()
    return {d for d in dag_ids if manager.is_authorized_dag(method="GET", user=user, details=DagDetails(id=d))}


def task_summary(user: Any, dag_id: str | None = None, days: float = 30.0) -> list[dict[str, Any]]:
    """Per (dag, task) over the last ``days``: runs, median wall and CPU seconds, CPU utilisation,
    largest peak RSS, last state."""
    from effopt.airflow_settings import get_store

    records = get_store().task_usage(dag_id=dag_id, since=time.time() - days * 86400)
    allowed = _readable(user, {r.dag_id for r in records})
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for r in records:
        if r.dag_id in allowed:
            groups[(r.dag_id, r.task_id)].append(r)
    rows = []
    for (dag, task), recs in sorted(groups.items()):
        wall = [r.wall_s for r in recs]
        cpu = [r.cpu_s for r in recs]
        rows.append(
            {
                "dag_id": dag,
                "task_id": task,
                "runs": len(recs),
                "median_wall_s": round(statistics.median(wall), 3),
                "median_cpu_s": round(statistics.median(cpu), 3),
                "cpu_utilisation": round(sum(cpu) / sum(wall), 3) if sum(wall) > 0 else None,
                "max_peak_rss_bytes": max(r.peak_rss_bytes for r in recs),
                "last_state": recs[-1].state,
                "last_end": recs[-1].end,
            }
        )
    return rows


def cache_summary() -> dict[str, Any]:
    from effopt.cache.report import summarize
    from effopt.hooks.cache import CacheHook

    backend = CacheHook().get_backend()
    summary = summarize(backend.read_stats(None))
    summary["backend"] = backend.describe()
    return summary


RIGHTSIZING_DAG = "effopt_rightsizing"


def rightsizing_summary(user: Any, days: float = 30.0) -> list[dict[str, Any]]:
    """Resource changes applied in the last ``days`` (newest first) that ``user`` may see."""
    from effopt.airflow_settings import get_store
    from effopt.rightsizing.apply.model import AIRFLOW_TASK_KIND

    records = get_store().rightsizing_audit(since=time.time() - days * 86400)
    task_dags = {r.namespace for r in records if r.kind == AIRFLOW_TASK_KIND}
    allowed = _readable(user, task_dags | {RIGHTSIZING_DAG})
    if RIGHTSIZING_DAG not in allowed:
        return []
    return [
        {"applied_at": r.applied_at, "mode": r.mode, "kind": r.kind, "namespace": r.namespace, "name": r.name,
         "container": r.container, "before": r.before, "after": r.after, "reason": r.reason,
         "monthly_cost_delta": r.monthly_cost_delta, "resource_version": r.resource_version}
        for r in reversed(records)
        if r.kind != AIRFLOW_TASK_KIND or r.namespace in allowed
    ]


def _resources_change(before: dict[str, Any], after: dict[str, Any]) -> str:
    """``requests.cpu 2 -> 1, limits.memory 2Gi -> 1Gi`` for the values that changed."""
    parts = []
    for section in ("requests", "limits"):
        old, new = before.get(section) or {}, after.get(section) or {}
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                parts.append(f"{section}.{name} {old.get(name, '-')} -> {new.get(name, '-')}")
    return ", ".join(parts) or "no change"


@app.get("/api/task-usage")
def api_task_usage(
    user: GetUserDep, dag_id: str | None = None, days: float = Query(30.0, gt=0, le=3650)
) -> list[dict[str, Any]]:
    return task_summary(user, dag_id, days)


@app.get("/api/rightsizing")
def api_rightsizing(user: GetUserDep, days: float = Query(30.0, gt=0, le=3650)) -> list[dict[str, Any]]:
    return rightsizing_summary(user, days)


@app.get("/api/cache")
def api_cache(user: GetUserDep) -> dict[str, Any]:
    try:
        return cache_summary()
    except Exception as exc:  # noqa: BLE001 - reported to the caller, never a stack trace page
        raise HTTPException(status_code=503, detail=f"computation cache unavailable: {exc}") from exc


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1f2937}"
    "table{border-collapse:collapse;margin:.5rem 0 1.5rem}"
    "th,td{border-bottom:1px solid #e5e7eb;padding:.3rem .7rem;text-align:left}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f4f6}"
    "h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.5rem}.muted{color:#6b7280}"
)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="n">{html.escape(str(c))}</td>' if isinstance(c, (int, float)) else f"<td>{html.escape(str(c))}</td>"
            for c in row
        ) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


@app.get("/", response_class=HTMLResponse)
def page(user: GetUserDep) -> str:
    tasks = task_summary(user)
    task_html = (
        _table(
            ["DAG", "task", "runs", "median wall s", "median CPU s", "CPU / wall", "max peak RSS", "last state"],
            [[t["dag_id"], t["task_id"], t["runs"], t["median_wall_s"], t["median_cpu_s"],
              "n/a" if t["cpu_utilisation"] is None else t["cpu_utilisation"], _mib(t["max_peak_rss_bytes"]),
              t["last_state"]] for t in tasks],
        )
        if tasks
        else '<p class="muted">No task usage recorded yet: run a DAG (e.g. effopt_selftest).</p>'
    )
    try:
        cache = cache_summary()
        totals = cache["totals"]
        rate = "n/a" if totals["hit_rate"] is None else f"{totals['hit_rate']:.1%}"
        cache_html = (
            f"<p>{html.escape(cache['backend'])}: {totals['calls']} calls, hit rate {rate}, "
            f"{totals['saved_s']:,.1f} s of computation saved, {totals['rejected']} rejected entries, "
            f"{totals['errors']} backend errors.</p>"
            + _table(
                ["namespace", "function", "calls", "hit rate", "saved s", "compute s", "stored"],
                [[f["namespace"], f["function"], f["calls"],
                  "n/a" if f["hit_rate"] is None else f"{f['hit_rate']:.1%}", f["saved_s"], f["compute_s"],
                  _mib(f["bytes"])] for f in cache["functions"]],
            )
        )
    except Exception as exc:  # noqa: BLE001 - the page still shows task usage
        cache_html = f'<p class="muted">Computation cache unavailable: {html.escape(str(exc))}</p>'
    changes = rightsizing_summary(user)
    rightsizing_html = (
        _table(
            ["applied (UTC)", "mode", "workload", "container", "change", "monthly cost delta", "reason"],
            [[time.strftime("%Y-%m-%d %H:%M", time.gmtime(c["applied_at"])), c["mode"],
              f"{c['kind']} {c['namespace']}/{c['name']}", c["container"], _resources_change(c["before"], c["after"]),
              "n/a" if c["monthly_cost_delta"] is None else f"{c['monthly_cost_delta']:+,.2f} USD", c["reason"]]
             for c in changes],
        )
        if changes
        else '<p class="muted">No right-sizing change applied in the last 30 days (effopt_rightsizing runs '
        "in dry-run mode unless its mode param says otherwise).</p>"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>effopt</title><style>{_STYLE}</style></head>"
        f"<body><h1>effopt</h1><h2>Measured task usage (last 30 days)</h2>{task_html}"
        f"<h2>Computation cache</h2>{cache_html}"
        f"<h2>Right-sizing changes (last 30 days)</h2>{rightsizing_html}</body></html>"
    )
