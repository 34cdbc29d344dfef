"""The FastAPI app behind ``/effopt`` (registered by the plugin in the API server only)."""

from __future__ import annotations

import time
from typing import Any

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse

from effopt.www import data, page

app = FastAPI(title="effopt", description="effopt: measured usage, waste, right-sizing and cache savings")


def _cache() -> tuple[dict[str, Any] | None, str | None]:
    try:
        return data.cache_summary(), None
    except Exception as exc:  # noqa: BLE001 - the page still shows everything else, and says why
        return None, str(exc)


@app.get("/api/task-usage")
def api_task_usage(
    user: GetUserDep, dag_id: str | None = None, days: float = Query(30.0, gt=0, le=3650)
) -> list[dict[str, Any]]:
    return data.task_summary(user, dag_id, days)


@app.get("/api/rightsizing")
def api_rightsizing(user: GetUserDep, days: float = Query(30.0, gt=0, le=3650)) -> list[dict[str, Any]]:
    return data.applied_changes(user, days)


@app.get("/api/rightsizing/plan")
def api_rightsizing_plan(user: GetUserDep) -> dict[str, Any] | None:
    return data.latest_plan(user)


@app.get("/api/waste")
def api_waste(user: GetUserDep) -> dict[str, Any] | None:
    return data.latest_waste_report(user)


@app.get("/api/spot")
def api_spot(user: GetUserDep, days: float = Query(30.0, gt=0, le=3650)) -> dict[str, Any]:
    return data.spot_summary(user, days)


@app.get("/api/cache")
def api_cache(user: GetUserDep) -> dict[str, Any]:
    cache, error = _cache()
    if cache is None:
        raise HTTPException(status_code=503, detail=f"computation cache unavailable: {error}")
    return cache


@app.get("/api/gpu")
def api_gpu(user: GetUserDep) -> dict[str, Any]:
    """GPU inventory, pools, the leases of the DAGs you may read, fragmentation, pool changes."""
    return data.gpu_summary(user)


@app.get("/reports/waste/{report_id}", response_class=HTMLResponse)
def waste_report_page(user: GetUserDep, report_id: str) -> str:
    """A rendered waste report, as it was emailed (charts inline); ``latest`` is the newest."""
    if report_id != "latest" and not report_id.isdigit():
        raise HTTPException(status_code=404, detail="no such waste report (use a report id or 'latest')")
    report = data.latest_waste_report(user, None if report_id == "latest" else int(report_id), html=True)
    if report is None:
        raise HTTPException(status_code=404, detail="no such waste report, or you may not read its DAG")
    return report["html"]


@app.get("/", response_class=HTMLResponse)
def dashboard(user: GetUserDep) -> str:
    cache, error = _cache()
    return page.render(tasks=data.task_summary(user), cache=cache, cache_error=error, plan=data.latest_plan(user),
                       waste=data.latest_waste_report(user), changes=data.applied_changes(user), now=time.time(),
                       gpu=data.gpu_summary(user), spot=data.spot_summary(user))
