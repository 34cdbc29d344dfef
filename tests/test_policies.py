"""Apply mode (d): recorded ``container_resources`` applied to opted-in KubernetesPodOperator tasks
by the cluster policy ``effopt_task_policy``.

The policy reads the effopt store or a JSON file, never the Kubernetes API.  The pod is only
built, not launched; building it loads the ``kubernetes_default`` connection's kube config,
which (``kube_hook`` fixture) points at the local stand-in ``tests.k8s_standin.K8sStandIn``
since there is no real API server here; no request is sent to it.
"""

from __future__ import annotations

import json
import logging

import pytest

from effopt.policies import effopt_task_policy
from effopt.rightsizing.apply import ResourceChange, Resources, WorkloadRef, build_plan
from effopt.rightsizing.apply.model import AIRFLOW_TASK_KIND
from effopt.rightsizing.apply.tasks import FILE_ENV, latest_task_resources, record_task_resources, write_task_resources
from tests.rightsizing.apply.conftest import GIB, MIB

NOW = 1_800_000_000.0
PLANNED = {"requests": {"cpu": "500m", "memory": "768Mi"}, "limits": {"memory": "768Mi"}}


def _plan(rates, dag_id="train", task_id="fit"):
    change = ResourceChange(WorkloadRef(AIRFLOW_TASK_KIND, dag_id, task_id), "base",
                            Resources(cpu_request=1, memory_request=GIB, memory_limit=GIB),
                            Resources(cpu_request=0.5, memory_request=768 * MIB, memory_limit=768 * MIB),
                            "p95 of 40 runs + 15%", memory_peak_bytes=600 * MIB)
    return build_plan([change], rates, now=NOW)


@pytest.fixture
def effopt_store(tmp_path, monkeypatch):
    """The store the policy reads ([effopt] store_url through the environment), fresh for this test."""
    from effopt.airflow_settings import get_settings, get_store

    monkeypatch.setenv("AIRFLOW__EFFOPT__STORE_URL", f"sqlite:///{tmp_path}/policy.db")
    monkeypatch.delenv(FILE_ENV, raising=False)
    get_settings.cache_clear()
    get_store.cache_clear()
    yield get_store()
    get_store().dispose()
    get_settings.cache_clear()
    get_store.cache_clear()


def _dag(tags=(), params=None, task_params=None):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    with DAG("train", schedule=None, tags=list(tags), params=params or {}) as dag:
        KubernetesPodOperator(task_id="fit", image="trainer:1", name="fit", params=task_params or {})
        KubernetesPodOperator(task_id="other", image="trainer:1", name="other")
        EmptyOperator(task_id="done")
    return dag


def test_opted_in_dag_gets_recorded_resources(effopt_store, rates, kube_hook, standin):
    record_task_resources(_plan(rates), effopt_store, now=NOW)
    (audit,) = effopt_store.rightsizing_audit(mode="airflow_task")
    assert (audit.namespace, audit.name, audit.after) == ("train", "fit", PLANNED)
    dag = _dag(tags=["effopt:rightsize"])
    changed = {t.task_id: effopt_task_policy(t) for t in dag.tasks}
    assert changed == {"fit": True, "other": False, "done": False}  # "other" has no recommendation
    fit = dag.get_task("fit")
    assert fit.container_resources.requests == PLANNED["requests"]
    assert fit.container_resources.limits == PLANNED["limits"]
    assert dag.get_task("other").container_resources is None
    # the pod the operator would launch carries them
    pod = fit.build_pod_request_obj()
    assert pod.spec.containers[0].resources.requests == PLANNED["requests"]
    assert standin.requests == []


def test_not_opted_in_is_left_alone(effopt_store, rates):
    record_task_resources(_plan(rates), effopt_store, now=NOW)
    dag = _dag()
    assert effopt_task_policy(dag.get_task("fit")) is False
    assert dag.get_task("fit").container_resources is None
    # a task opts out of an opted-in DAG; a task opts in on its own
    assert effopt_task_policy(_dag(tags=["effopt:rightsize"], task_params={"effopt_rightsize": False})
                              .get_task("fit")) is False
    assert effopt_task_policy(_dag(task_params={"effopt_rightsize": True}).get_task("fit")) is True
    # a DAG-level param reaches its tasks
    assert effopt_task_policy(_dag(params={"effopt_rightsize": True}).get_task("fit")) is True


def test_latest_record_wins_and_file_source(effopt_store, rates, tmp_path, monkeypatch):
    record_task_resources(_plan(rates), effopt_store, now=NOW)
    newer = build_plan([ResourceChange(WorkloadRef(AIRFLOW_TASK_KIND, "train", "fit"), "base",
                                       Resources(cpu_request=0.5), Resources(cpu_request=0.25), "lower")],
                       rates, now=NOW + 86400)
    record_task_resources(newer, effopt_store, now=NOW + 86400)
    assert latest_task_resources("train", "fit", store=effopt_store) == {"requests": {"cpu": "250m"}}

    path = write_task_resources(_plan(rates), tmp_path / "tasks.json", now=NOW)
    data = json.loads(path.read_text())
    assert data["tasks"]["train"]["fit"]["container_resources"] == PLANNED
    monkeypatch.setenv(FILE_ENV, str(path))
    task = _dag(tags=["effopt:rightsize"]).get_task("fit")
    assert effopt_task_policy(task) is True and task.container_resources.limits == PLANNED["limits"]


def test_unreadable_file_warns_and_leaves_task(effopt_store, tmp_path, monkeypatch, caplog):
    bad = tmp_path / "tasks.json"
    bad.write_text("{broken")
    monkeypatch.setenv(FILE_ENV, str(bad))
    task = _dag(tags=["effopt:rightsize"]).get_task("fit")
    with caplog.at_level(logging.WARNING, logger="effopt.policies"):
        assert effopt_task_policy(task) is False
    assert task.container_resources is None
    assert f"task resources file {bad} cannot be read" in caplog.text
