"""KubernetesPodOperator tasks on spot nodes: the pod spec, and disruptions relaunched inside the try.

The Kubernetes API is the local stand-in of ``tests/k8s_standin.py`` (there is no API server here), extended
below with core/v1 pods that live a scripted life: each pod the operator creates follows the next entry of
``PodStandIn.script``: ``succeed``; ``fail`` (exit 1: an ordinary failure); ``disrupt`` (phase Failed with the
``DisruptionTarget`` condition, as the kubelet and taint manager set it when a spot node is drained); or
``vanish`` (the pod disappears while it runs: its node was lost).  The operator talks to it through the
official client, as it would to a cluster.
"""

from __future__ import annotations

import copy
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from tests.k8s_standin import K8sStandIn, _status
from tests.operators.test_spot_interruption import in_thread
from tests.rightsizing.apply.conftest import kubectl_patch_local


def _selector_matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if term.startswith("!"):
            if term[1:] in labels:
                return False
        elif "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        else:
            k, v = term.split("=", 1)
            if labels.get(k) != v:
                return False
    return True


class PodStandIn(K8sStandIn):
    """The stand-in plus ``/api/v1/namespaces/<ns>/pods`` (create, get, list by label selector, patch labels,
    delete) and empty ``events``; each GET of a pod moves it one step along its scripted life."""

    def __init__(self, script: list[str]) -> None:
        super().__init__()
        self.script = list(script)
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.created: list[dict[str, Any]] = []
        self.namespaces: set[str] | None = None  # None: every namespace exists

    def _advance(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        life = pod["_life"]
        pod["_reads"] += 1
        running = {"name": "base", "ready": True, "restartCount": 0, "image": "x", "imageID": "",
                   "state": {"running": {"startedAt": "2026-12-01T10:00:00Z"}}}
        pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]
        if pod["_reads"] == 1:
            pod["status"].update({"phase": "Running", "containerStatuses": [running]})
            return pod
        if life == "vanish":
            self.pods.pop((pod["metadata"]["namespace"], pod["metadata"]["name"]), None)
            return None
        code = {"succeed": 0, "fail": 1, "disrupt": 137}[life]
        reason = "Completed" if code == 0 else "Error"
        done = {**running, "ready": False,
                "state": {"terminated": {"exitCode": code, "reason": reason, "finishedAt": "2026-12-01T10:01:00Z"}}}
        pod["status"].update({"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [done]})
        if life == "disrupt":
            pod["status"]["conditions"].append({
                "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
                "message": "Taint manager: deleting due to NoExecute taint `aws.amazon.com/spot-itn`"})
        return pod

    @staticmethod
    def _public(pod: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in pod.items() if not k.startswith("_")}

    def _route(self, method: str, path: str, body: Any, content_type: str | None) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[:2] != ["api", "v1"] or parts[2] != "namespaces" or parts[4] not in ("pods",
                                                                                                        "events"):
            return super()._route(method, path, body, content_type)
        ns = parts[3]
        if parts[4] == "events":
            return 200, {"kind": "EventList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}
        with self._lock:
            if len(parts) == 5 and method == "POST":
                if self.namespaces is not None and ns not in self.namespaces:
                    return 404, _status(404, "NotFound", f'namespaces "{ns}" not found')
                pod = copy.deepcopy(body)
                life = self.script.pop(0) if self.script else "succeed"
                pod["metadata"].update({"namespace": ns, "uid": f"uid-{len(self.created)}",
                                        "resourceVersion": self._next_version(),
                                        "creationTimestamp": "2026-12-01T10:00:00Z"})
                pod.update({"status": {"phase": "Pending"}, "_life": life, "_reads": 0})
                self.pods[(ns, pod["metadata"]["name"])] = pod
                self.created.append(copy.deepcopy(body))
                return 201, self._public(pod)
            if len(parts) == 5 and method == "GET":
                selector = self._query.get("labelSelector", "")
                items = [self._public(p) for (n, _), p in sorted(self.pods.items())
                         if n == ns and _selector_matches(p["metadata"].get("labels") or {}, selector)]
                return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                             "items": items}
            key = (ns, parts[5])
            pod = self.pods.get(key)
            if pod is None:
                return 404, _status(404, "NotFound", f'pods "{parts[5]}" not found')
            if method == "GET":
                pod = self._advance(pod)
                if pod is None:
                    return 404, _status(404, "NotFound", f'pods "{parts[5]}" not found')
                return 200, self._public(pod)
            if method == "PATCH":
                pod["metadata"].setdefault("labels", {}).update((body.get("metadata") or {}).get("labels") or {})
                return 200, self._public(pod)
            if method == "DELETE":
                self.pods.pop(key)
                return 200, self._public(pod)
        return 405, _status(405, "MethodNotAllowed", method)

    def _handler(self):
        handler = super()._handler()
        standin = self

        class Handler(handler):
            def _serve(self) -> None:
                from urllib.parse import parse_qsl, urlsplit

                standin._query = dict(parse_qsl(urlsplit(self.path).query))
                super()._serve()

            do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = _serve

        return Handler


@pytest.fixture
def pods(tmp_path, monkeypatch):
    made: list[PodStandIn] = []

    def make(*script: str) -> PodStandIn:
        server = PodStandIn(list(script)).start()
        made.append(server)
        config = server.kubeconfig(tmp_path / f"kubeconfig-{len(made)}.yaml")
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT",
                           json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(config)}}))
        return server

    yield make
    for server in made:
        server.close()


def _context(task_id: str = "train") -> dict[str, Any]:
    pushed: dict[str, Any] = {}
    ti = SimpleNamespace(dag_id="train_dag", task_id=task_id, run_id="manual__spot", map_index=-1, try_number=1,
                         xcom_push=lambda key, value: pushed.__setitem__(key, value))
    return {"ti": ti, "run_id": "manual__spot", "dag": SimpleNamespace(dag_id="train_dag"), "pushed": pushed}


def _operator(**kw: Any):
    from effopt.operators.spot import SpotKubernetesPodOperator

    defaults = {"task_id": "train", "name": "train", "namespace": "ml", "image": "trainer:1", "get_logs": False,
                "do_xcom_push": False, "startup_check_interval_seconds": 0, "retries": 2,
                "base_container_status_polling_interval": 0.05, "log_events_on_startup": False,
                "node_selector": {"team": "ml"}}
    return SpotKubernetesPodOperator(**{**defaults, **kw})


def _spec(pod: dict[str, Any]) -> dict[str, Any]:
    spec = pod["spec"]
    return {"nodeSelector": spec.get("nodeSelector"), "tolerations": spec.get("tolerations"),
            "terminationGracePeriodSeconds": spec.get("terminationGracePeriodSeconds")}


SPOT_SPEC = {"nodeSelector": {"team": "ml", "karpenter.sh/capacity-type": "spot"},
             "tolerations": [{"key": "karpenter.sh/capacity-type", "operator": "Equal", "value": "spot",
                              "effect": "NoSchedule"}],
             "terminationGracePeriodSeconds": 90}
ON_DEMAND_SPEC = {"nodeSelector": {"team": "ml", "karpenter.sh/capacity-type": "on-demand"}, "tolerations": [],
                  "terminationGracePeriodSeconds": None}


def test_the_pod_carries_the_spot_selector_tolerations_and_grace_period_checked_with_kubectl(pods, tmp_path):
    server = pods("succeed")
    op = _operator()
    in_thread(op.execute, _context())
    (pod,) = server.created
    assert _spec(pod) == SPOT_SPEC
    # The same fields, as a strategic merge patch of the plain pod, applied by kubectl --local: valid Pod fields.
    plain = copy.deepcopy(pod)
    for field in ("nodeSelector", "tolerations", "terminationGracePeriodSeconds"):
        plain["spec"].pop(field, None)
    patch = {"spec": {k: v for k, v in SPOT_SPEC.items()}}
    merged = kubectl_patch_local({**plain, "apiVersion": "v1", "kind": "Pod"}, patch, tmp_path)
    assert _spec(merged) == SPOT_SPEC
    assert merged["spec"]["containers"][0]["image"] == "trainer:1"


def test_eks_labels_and_a_configured_grace_period(pods, monkeypatch):
    from effopt.airflow_settings import get_settings

    monkeypatch.setenv("AIRFLOW__EFFOPT__SPOT_CAPACITY_LABEL", "eks")
    monkeypatch.setenv("AIRFLOW__EFFOPT__SPOT_POD_GRACE_PERIOD_S", "60")
    get_settings.cache_clear()
    try:
        server = pods("succeed")
        in_thread(_operator().execute, _context())
    finally:
        get_settings.cache_clear()
    assert _spec(server.created[0]) == {
        "nodeSelector": {"team": "ml", "eks.amazonaws.com/capacityType": "SPOT"},
        "tolerations": [{"key": "eks.amazonaws.com/capacityType", "operator": "Equal", "value": "SPOT",
                         "effect": "NoSchedule"}], "terminationGracePeriodSeconds": 60}


def test_a_disruption_relaunches_the_pod_in_the_same_try_on_spot_then_on_demand(pods):
    from effopt.airflow_settings import get_store

    server = pods("disrupt", "vanish", "succeed")
    op = _operator()
    context = _context()
    since = time.time()
    in_thread(op.execute, context)  # returns: the try succeeded, no retry was spent
    assert [_spec(p) for p in server.created] == [SPOT_SPEC, SPOT_SPEC, ON_DEMAND_SPEC]
    assert len({p["metadata"]["name"] for p in server.created}) == 3  # a fresh pod each time
    assert all(p["metadata"]["labels"]["try_number"] == "1" for p in server.created)
    assert op.retries == 2 and context["ti"].try_number == 1
    assert [d["capacity"] for d in op.disruptions] == ["spot", "spot"]
    assert "DisruptionTarget (DeletionByTaintManager)" in op.disruptions[0]["reason"]
    assert "gone while it ran" in op.disruptions[1]["reason"]
    recorded = [e for e in get_store().spot_events(since=since, kinds=["disruption"]) if e["dag_id"] == "train_dag"]
    assert len(recorded) == 2 and {e["detail"]["relaunch"] for e in recorded} == {1, 2}


def test_an_ordinary_failure_is_not_relaunched_and_the_limit_ends_the_try(pods):
    from airflow.sdk.exceptions import AirflowException

    server = pods("fail")
    with pytest.raises(AirflowException, match="returned a failure"):
        in_thread(_operator().execute, _context())
    assert len(server.created) == 1
    server = pods("disrupt", "disrupt", "succeed")
    with pytest.raises(AirflowException, match="relaunch limit is 1"):
        in_thread(_operator(max_relaunches=1).execute, _context())
    assert len(server.created) == 2


def test_a_404_on_the_create_is_an_ordinary_failure_not_a_disruption(pods):
    """No such namespace: the create answers 404 before any pod exists; nothing to relaunch."""
    from effopt.airflow_settings import get_store

    server = pods("succeed")
    server.namespaces = {"ml"}
    op = _operator(namespace="nowhere")
    since = time.time()
    with pytest.raises(Exception) as failed:
        in_thread(op.execute, _context("train_nowhere"))
    assert "relaunch limit" not in str(failed.value) and "not found" in str(failed.value)
    assert server.created == [] and op.disruptions == []
    assert not [e for e in get_store().spot_events(since=since, kinds=["disruption"])
                if e["task_id"] == "train_nowhere"]


def test_the_cluster_policy_puts_an_opted_in_pod_on_spot(kube_hook):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk import DAG

    from effopt.policies import effopt_task_policy

    with DAG("batch", schedule=None) as dag:
        KubernetesPodOperator(task_id="etl", image="etl:1", name="etl", params={"effopt_spot": True},
                              termination_grace_period=600)
        KubernetesPodOperator(task_id="serve", image="etl:1", name="serve")
        _operator(task_id="own")
    changed = {t.task_id: effopt_task_policy(t) for t in dag.tasks}
    assert changed == {"etl": True, "serve": False, "own": False}
    pod = dag.get_task("etl").build_pod_request_obj()
    spec = pod.to_dict()["spec"]
    assert spec["node_selector"] == {"karpenter.sh/capacity-type": "spot"}
    assert [t["key"] for t in spec["tolerations"]] == ["karpenter.sh/capacity-type"]
    assert spec["termination_grace_period_seconds"] == 90  # 600 s would outlast the two-minute notice
    assert not dag.get_task("serve").build_pod_request_obj().spec.node_selector


def test_the_disruption_rule():
    from effopt.spot.kubernetes import disruption, placement

    assert disruption({"status": {"phase": "Failed", "reason": "NodeLost", "message": "node gone"}}).startswith(
        "node lost (NodeLost)")
    not_target = [{"type": "DisruptionTarget", "status": "False"}]
    assert disruption({"status": {"phase": "Failed", "conditions": not_target}}) is None
    assert disruption({"status": {"phase": "Failed", "reason": "Evicted"}}) is None  # memory pressure: not spot
    assert disruption(None) is None and disruption(None, gone=True)
    with pytest.raises(ValueError, match="inside the 120 s"):
        placement("spot", grace_period_s=120)
    assert yaml.safe_dump(placement("on-demand", label="eks"))  # plain data
