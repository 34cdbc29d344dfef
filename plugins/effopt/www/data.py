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
    problems: list[str] = []
    try:
        summary = summarize(backend.read_stats(None, problems))
        summary["backend"] = backend.describe()
    finally:
        backend.close()
    summary["problems"] = problems  # corrupted statistics found (and reset) while reading
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


def _pool_stats() -> list[dict[str, Any]]:
    """effopt's pools (GPU, quota, serial) with occupied and free slots, from the API server's own database."""
    import sqlalchemy as sa
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    from effopt.gpu.pools import ALL_POOL, MODEL_PREFIX, QUOTA_PREFIX, SERIAL_POOL

    with create_session() as session:
        stats = Pool.slots_stats(session=session)
        descriptions = dict(session.execute(sa.select(Pool.pool, Pool.description)).all())
    rows = []
    for name, s in sorted(stats.items()):
        if name in (ALL_POOL, SERIAL_POOL) or name.startswith((MODEL_PREFIX, QUOTA_PREFIX)):
            total = s["total"] if s["total"] != float("inf") else None
            rows.append({"pool": name, "slots": total, "running": s["running"], "queued": s["queued"],
                         "scheduled": s["scheduled"], "deferred": s["deferred"],
                         "open": s["open"] if s["open"] != float("inf") else None,
                         "description": descriptions.get(name) or ""})
    return rows


def gpu_summary(user: Any) -> dict[str, Any]:
    """The GPU inventory per node (as ``effopt_gpu_pools`` last read it, else read now), effopt's pools with
    occupied and free slots, each GPU's leased thousandths, the leases ``user`` may see (by DAG read access) with
    their tasks, the fragmentation figure, and the latest pool changes. A part that cannot be read says why in
    ``errors`` and the rest is still there."""
    from effopt.airflow_settings import get_settings, get_store
    from effopt.gpu.inventory import Inventory
    from effopt.hooks.gpu import GpuHook

    errors: dict[str, str] = {}
    store = get_store()
    snapshot = store.latest_gpu_inventory()
    inventory = None
    if snapshot is not None:
        inventory, origin = Inventory.from_dict(snapshot["inventory"]), "effopt_gpu_pools"
    else:
        origin = "read now"
        try:
            inventory = GpuHook().inventory()
        except Exception as exc:  # noqa: BLE001 - the page says why and shows the rest
            errors["inventory"] = f"{type(exc).__name__}: {exc}"
    out: dict[str, Any] = {"inventory": None if inventory is None else {**inventory.to_dict(),
                                                                         "summary": inventory.describe()},
                           "origin": origin, "unit": get_settings().gpu_pool_unit, "policy": get_settings().gpu_policy,
                           "gpus": [], "leases": [], "hidden_leases": 0, "fragmentation": None, "backend": None,
                           "pools": [], "changes": []}
    try:
        out["pools"] = _pool_stats()
    except Exception as exc:  # noqa: BLE001
        errors["pools"] = f"{type(exc).__name__}: {exc}"
    if inventory is not None and not inventory.empty:
        try:
            manager = GpuHook().lease_manager(inventory)
            usage = manager.usage()
            out["backend"] = manager.backend.describe()
            leases = usage["leases"]
            allowed = readable(user, {lease["holder_info"]["dag_id"] for lease in leases})
            out["leases"] = [lease for lease in leases if lease["holder_info"]["dag_id"] in allowed]
            out["hidden_leases"] = len(leases) - len(out["leases"])
            out["gpus"], out["fragmentation"] = usage["gpus"], usage["fragmentation"]
            if usage["warnings"]:
                errors["leases"] = "; ".join(usage["warnings"])
        except Exception as exc:  # noqa: BLE001
            errors["leases"] = f"{type(exc).__name__}: {exc}"
    try:
        out["changes"] = [{k: v for k, v in c.items() if k != "id"} for c in store.gpu_pool_changes(20)]
    except Exception as exc:  # noqa: BLE001
        errors["changes"] = f"{type(exc).__name__}: {exc}"
    out["errors"] = errors
    return out
#: Spot event kinds the page counts, and how it names them.
SPOT_COUNTED = {"interruption": "interruptions", "rebalance": "rebalance recommendations",
                "fallback": "fallbacks to on-demand", "disruption": "pod disruptions",
                "capacity_error": "capacity errors", "rollback": "rollbacks"}


def _spot_event_text(e: dict[str, Any]) -> str:
    d = e.get("detail") or {}
    kind = e["kind"]
    if kind in ("interruption", "rebalance"):
        n, o = d.get("notice") or {}, d.get("offering") or {}
        return (f"{n.get('instance_id')} ({o.get('instance_type', '?')} in {o.get('zone') or o.get('az_id') or '?'}): "
                f"{n.get('action') or 'rebalance'} at {n.get('time') or '?'}; relaunch excludes "
                f"{', '.join('/'.join(x) for x in d.get('exclude') or []) or 'nothing'}")
    if kind == "disruption":
        return f"pod {d.get('pod')} on {d.get('capacity')}: {d.get('reason')} (relaunch {d.get('relaunch')})"
    if kind == "capacity_error":
        return f"{d.get('code')} for {d.get('offering')}"
    if kind == "cleanup":
        return str(d.get("summary") or "")
    instances = d.get("instances") or []
    return f"{d.get('reason') or kind}" + (f": {', '.join(instances)}" if instances else "")


def spot_summary(user: Any, days: float = 30.0, now: float | None = None) -> dict[str, Any]:
    """Spot placement over the last ``days``: decisions, the fleets launched with their cost so far (price x
    hours each instance ran, to now for those still running), and the interruptions, fallbacks, disruptions and
    cleanups; only what the DAGs ``user`` may read did."""
    from effopt.airflow_settings import get_store

    now = time.time() if now is None else now
    since = now - days * DAY
    store = get_store()
    decisions = store.spot_decisions(since=since, limit=50)
    instances = store.spot_instances(since=since)
    events = store.spot_events(since=since, limit=500)
    allowed = readable(user, {r["dag_id"] for r in (*decisions, *instances, *events)})
    decisions = [d for d in decisions if d["dag_id"] in allowed]
    instances = [i for i in instances if i["dag_id"] in allowed]
    events = [e for e in events if e["dag_id"] in allowed]
    fleets: dict[tuple[str, str, str], dict[str, Any]] = {}
    for i in instances:
        f = fleets.setdefault((i["dag_id"], i["run_id"], i["task_id"]), {
            "dag_id": i["dag_id"], "run_id": i["run_id"], "task_id": i["task_id"], "instances": 0, "running": 0,
            "capacity": {"spot": 0, "on-demand": 0}, "offerings": set(), "launched_at": i["launched_at"],
            "usd_per_hour": 0.0, "cost_so_far": 0.0, "unpriced": 0})
        f["instances"] += 1
        f["capacity"][i["capacity"]] = f["capacity"].get(i["capacity"], 0) + 1
        f["offerings"].add(f"{i['instance_type']} {i['capacity']} {i['zone'] or i['az_id'] or i['region']}")
        f["launched_at"] = min(f["launched_at"], i["launched_at"])
        end = i["ended_at"] if i["ended_at"] is not None else now
        if i["ended_at"] is None:
            f["running"] += 1
        if i["usd_per_hour"] is None:
            f["unpriced"] += 1
            continue
        f["cost_so_far"] += i["usd_per_hour"] * max(end - i["launched_at"], 0.0) / 3600.0
        if i["ended_at"] is None:
            f["usd_per_hour"] += i["usd_per_hour"]
    fleet_rows = sorted(({**f, "offerings": sorted(f["offerings"]), "cost_so_far": round(f["cost_so_far"], 6),
                          "usd_per_hour": round(f["usd_per_hour"], 6)} for f in fleets.values()),
                        key=lambda f: -f["launched_at"])
    counts = {k: sum(1 for e in events if e["kind"] == k) for k in SPOT_COUNTED}
    counts["orphans_terminated"] = sum(len((e["detail"] or {}).get("terminated") or []) for e in events
                                       if e["kind"] == "cleanup")
    return {
        "window_days": days,
        "decisions": [{"created_at": d["created_at"], "dag_id": d["dag_id"], "task_id": d["task_id"],
                       "run_id": d["run_id"], "capacity": d["capacity"], "offering": d["offering"],
                       "expected_cost": d["expected_cost"], "reasons": (d["decision"] or {}).get("reasons", []),
                       "catalog_source": (d["decision"] or {}).get("catalog_source")} for d in decisions],
        "fleets": fleet_rows,
        "cost_so_far": round(sum(f["cost_so_far"] for f in fleet_rows), 6),
        "running_instances": sum(f["running"] for f in fleet_rows),
        "events": [{"at": e["at"], "kind": e["kind"], "dag_id": e["dag_id"], "task_id": e["task_id"],
                    "run_id": e["run_id"], "text": _spot_event_text(e)} for e in events[:50]],
        "counts": counts,
    }
