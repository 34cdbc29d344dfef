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

Spot: a ``KubernetesPodOperator`` with ``params={"effopt_spot": True}`` gets the spot node selector and
toleration (``[effopt] spot_capacity_label``) and a termination grace period inside the two-minute
interruption notice (``[effopt] spot_pod_grace_period_s``), so its pod lands on spot nodes
(:func:`effopt_spot_policy`).  A cluster policy can only set a task's declared fields, as right-sizing does;
relaunching a disrupted pod in the same try (so no retry is spent on it) is behaviour of the try itself, which
:class:`effopt.operators.spot_pod.SpotKubernetesPodOperator` has: use it where that matters.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from effopt.rightsizing.apply.tasks import FILE_ENV, latest_task_resources

log = logging.getLogger(__name__)

OPT_IN_TAG = "effopt:rightsize"
OPT_IN_PARAM = "effopt_rightsize"
SPOT_PARAM = "effopt_spot"


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
    """Cluster policy: right-sizing (:func:`rightsizing_policy`) and spot (:func:`effopt_spot_policy`) for
    opted-in KubernetesPodOperator tasks.  Returns whether the task was changed."""
    resized = rightsizing_policy(task)
    return effopt_spot_policy(task) or resized


def _param_true(task: Any, name: str) -> bool | None:
    params = getattr(task, "params", None) or {}
    if name not in params:
        return None
    value = params[name]
    value = getattr(value, "value", value)  # a Param object
    return value is True or str(value).lower() in ("true", "1", "yes")


def effopt_spot_policy(task: Any) -> bool:
    """Put an opted-in (``effopt_spot`` param) KubernetesPodOperator's pod on spot nodes; whether it changed."""
    if not _param_true(task, SPOT_PARAM):
        return False
    try:
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    except ImportError:
        return False
    if not isinstance(task, KubernetesPodOperator) or type(task).__name__ == "SpotKubernetesPodOperator":
        return False  # the subclass places its pods itself, try by try
    from kubernetes.client import models as k8s

    from effopt.spot.kubernetes import capacity_keys, placement

    try:
        from effopt.airflow_settings import get_settings

        settings = get_settings()
        fields = placement("spot", label=settings.spot_capacity_label, grace_period_s=settings.spot_pod_grace_period_s)
    except Exception as exc:  # noqa: BLE001 - a bad setting must not stop DAG parsing
        log.warning("effopt: %s.%s not put on spot: %s", getattr(task, "dag_id", "?"), task.task_id, exc)
        return False
    keys = capacity_keys()
    task.node_selector = {**{k: v for k, v in (task.node_selector or {}).items() if k not in keys},
                          **fields["node_selector"]}
    task.tolerations = [t for t in (task.tolerations or []) if getattr(t, "key", None) not in keys] + [
        k8s.V1Toleration(**t) for t in fields["tolerations"]]
    grace = fields["termination_grace_period"]
    if task.termination_grace_period is None or task.termination_grace_period > grace:
        task.termination_grace_period = grace
    return True


def rightsizing_policy(task: Any) -> bool:
    """Set recorded ``container_resources`` on an opted-in KubernetesPodOperator; whether it changed."""
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
