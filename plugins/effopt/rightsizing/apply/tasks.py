"""Apply mode (d): recommended ``container_resources`` for Airflow KubernetesPodOperator tasks, recorded.

A recommendation for task ``task_id`` of DAG ``dag_id`` is a
:class:`~effopt.rightsizing.apply.model.ResourceChange` whose workload is
``WorkloadRef("AirflowTask", dag_id, task_id)`` (container ``"base"``, the
pod operator's container).  "Applying" it records the planned resources:

* in the effopt store (:func:`record_task_resources`, an audit record with
  mode ``airflow_task``), and/or
* in a JSON file (:func:`write_task_resources`) for deployments whose DAG
  processors should not read the store.

At parse time Airflow's cluster policy (:func:`effopt.policies.effopt_task_policy`)
sets the latest recorded resources, :func:`latest_task_resources`, as
``container_resources`` of every opted-in ``KubernetesPodOperator``.  Plain
Python.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from effopt.rightsizing.apply.model import AIRFLOW_TASK_KIND
from effopt.rightsizing.apply.plan import Plan
from effopt.store import EffoptStore, RightsizingAuditRecord

FILE_ENV = "EFFOPT_TASK_RESOURCES_FILE"
TASK_CONTAINER = "base"
FILE_VERSION = 1


def _task_items(plan: Plan) -> list[Any]:
    return [i for i in plan.to_apply() if i.change.workload.kind == AIRFLOW_TASK_KIND]


def record_task_resources(plan: Plan, store: EffoptStore, *, now: float | None = None) -> list[RightsizingAuditRecord]:
    """Record the plan's Airflow-task items as applied (audit mode ``airflow_task``)."""
    applied_at = time.time() if now is None else now
    records = [
        RightsizingAuditRecord(
            applied_at=applied_at, mode="airflow_task", kind=AIRFLOW_TASK_KIND,
            namespace=i.change.workload.namespace, name=i.change.workload.name, container=i.change.container,
            before=i.change.current.to_k8s(), after=i.after.to_k8s(),
            reason="; ".join((i.change.reason, *i.decisions)), monthly_cost_delta=i.monthly_cost_delta)
        for i in _task_items(plan)
    ]
    store.record_rightsizing_audit(records)
    return records


def write_task_resources(plan: Plan, path: str | Path, *, now: float | None = None) -> Path:
    """Merge the plan's Airflow-task items into the JSON file at ``path`` (written atomically)."""
    path = Path(path)
    data: dict[str, Any] = {"version": FILE_VERSION, "tasks": {}}
    if path.exists():
        data = _read_file(path)
    applied_at = time.time() if now is None else now
    for i in _task_items(plan):
        w = i.change.workload
        data["tasks"].setdefault(w.namespace, {})[w.name] = {
            "container_resources": i.after.to_k8s(), "applied_at": applied_at, "reason": i.change.reason}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return path


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"task resources file {path} cannot be read: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != FILE_VERSION or not isinstance(data.get("tasks"), dict):
        raise ValueError(f"task resources file {path}: expected {{'version': {FILE_VERSION}, 'tasks': {{...}}}}")
    return data


def latest_task_resources(dag_id: str, task_id: str, *, path: str | Path | None = None,
                          store: EffoptStore | None = None) -> dict[str, Any] | None:
    """The latest recorded ``container_resources`` of a task, from ``path`` if given, else ``store``."""
    if path is not None:
        entry = _read_file(Path(path))["tasks"].get(dag_id, {}).get(task_id)
        return dict(entry["container_resources"]) if entry else None
    if store is None:
        raise ValueError("latest_task_resources needs a task resources file or the effopt store")
    records = store.rightsizing_audit(kind=AIRFLOW_TASK_KIND, namespace=dag_id, name=task_id, mode="airflow_task")
    return dict(records[-1].after) if records else None
