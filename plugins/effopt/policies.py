"""Airflow cluster policies of effopt, for ``airflow_local_settings.py``::

    from effopt.policies import effopt_task_policy

    def task_policy(task):
        effopt_task_policy(task)

Right-sizing: an opted-in ``KubernetesPodOperator`` gets the latest recorded
``container_resources`` (:mod:`effopt.rightsizing.apply.tasks`).  A DAG opts in
with the tag ``effopt:rightsize``; a task with ``params={"effopt_rightsize":
True}`` (``False`` opts a task of an opted-in DAG out).
``EFFOPT_TASK_RESOURCES_FILE`` set in the environment makes the policy read
that JSON file instead of the effopt store.  It reads only that file or the
store, no network; when the recommendations cannot be read it logs a warning
and leaves the task as it is, so a broken store never stops DAGs from parsing.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from effopt.rightsizing.apply.tasks import FILE_ENV, latest_task_resources

log = logging.getLogger(__name__)

OPT_IN_TAG = "effopt:rightsize"
OPT_IN_PARAM = "effopt_rightsize"


def opted_in(task: Any) -> bool:
    """The task's ``effopt_rightsize`` param if set, else whether its DAG has the ``effopt:rightsize`` tag."""
    params = getattr(task, "params", None) or {}
    if OPT_IN_PARAM in params:
        value = params[OPT_IN_PARAM]
        value = getattr(value, "value", value)  # a Param object
        return value is True or str(value).lower() in ("true", "1", "yes")
    dag = getattr(task, "dag", None)
    return bool(dag is not None and OPT_IN_TAG in (getattr(dag, "tags", None) or ()))


def effopt_task_policy(task: Any) -> bool:
    """Cluster policy: set recorded ``container_resources`` on an opted-in KubernetesPodOperator.

    Returns whether the task was changed.
    """
    try:
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    except ImportError:
        return False
    if not isinstance(task, KubernetesPodOperator) or not opted_in(task):
        return False
    dag_id = task.dag.dag_id if getattr(task, "dag", None) is not None else getattr(task, "dag_id", None)
    if not dag_id:
        return False
    path = os.environ.get(FILE_ENV) or None
    try:
        store = None
        if path is None:
            from effopt.airflow_settings import get_store

            store = get_store()
        resources = latest_task_resources(dag_id, task.task_id, path=path, store=store)
    except Exception as exc:  # noqa: BLE001 - a broken store or file must not stop DAG parsing
        log.warning("effopt: no right-sizing for %s.%s, recommendations unreadable: %s", dag_id, task.task_id, exc)
        return False
    if not resources:
        return False
    from kubernetes.client import models as k8s

    task.container_resources = k8s.V1ResourceRequirements(requests=resources.get("requests"),
                                                          limits=resources.get("limits"))
    return True
