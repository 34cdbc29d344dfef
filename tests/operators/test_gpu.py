"""GPU tasks in-process: pools and slots from the request, the lease around execute (devices handed over,
released after success, failure and kill), the wait deferred to GpuCapacityTrigger, KubernetesPodOperator pinned
to the leased node, the sensor, graph GPU nodes, and the effopt page's GPU section."""

from __future__ import annotations

import asyncio
import os

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout

from effopt.gpu.leases import Holder, LeaseRequest, LeaseRequestError


def reload_settings() -> None:
    from effopt.airflow_settings import get_settings, get_store

    get_settings.cache_clear()
    get_store.cache_clear()


@pytest.fixture
def gpus(tmp_path, monkeypatch):
    """A static inventory of one node with two T4s, leases in a fresh effopt store (no effopt_redis)."""
    path = tmp_path / "gpus.yaml"
    path.write_text("nodes:\n  - {name: box, gpus: 2, model: T4, gpu_memory_mib: 15360}\n")
    monkeypatch.setenv("AIRFLOW__EFFOPT__GPU_INVENTORY", "static")
    monkeypatch.setenv("AIRFLOW__EFFOPT__GPU_INVENTORY_FILE", str(path))
    monkeypatch.setenv("AIRFLOW__EFFOPT__STORE_URL", f"sqlite:///{tmp_path}/effopt.db")
    monkeypatch.delenv("AIRFLOW_CONN_EFFOPT_REDIS", raising=False)
    monkeypatch.delenv("EFFOPT_GPU_NODE", raising=False)
    reload_settings()
    yield path
    monkeypatch.undo()
    reload_settings()


@pytest.fixture
def no_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__EFFOPT__GPU_INVENTORY", "static")
    monkeypatch.delenv("AIRFLOW__EFFOPT__GPU_INVENTORY_FILE", raising=False)
    monkeypatch.setenv("AIRFLOW__EFFOPT__STORE_URL", f"sqlite:///{tmp_path}/effopt.db")
    reload_settings()
    yield
    monkeypatch.undo()
    reload_settings()


class FakeTI:
    """The parts of a task instance the mixin reads (holder key) and writes (the lease XCom)."""

    def __init__(self, task_id: str = "t", try_number: int = 1) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index, self.try_number = "dag", task_id, "run", -1, try_number
        self.xcom: dict = {}

    def xcom_push(self, key, value):
        self.xcom[key] = value


def _manager():
    from effopt.hooks.gpu import GpuHook

    return GpuHook().lease_manager()


def test_pool_and_slots_come_from_the_request(gpus, monkeypatch):
    from airflow.sdk import DAG

    from effopt.decorators import gpu_task
    from effopt.operators.gpu import GpuPythonOperator

    with DAG("d", schedule=None):
        @gpu_task(gpu_milli=600)
        def part():
            return 1

        whole = GpuPythonOperator(task_id="whole", python_callable=print, gpus=2)
        mine = GpuPythonOperator(task_id="mine", python_callable=print, gpus=1, pool="my_pool")
        op = part().operator
    assert (op.pool, op.pool_slots, whole.pool, whole.pool_slots, mine.pool) == ("effopt_gpu", 1, "effopt_gpu", 2,
                                                                                   "my_pool")
    monkeypatch.setenv("AIRFLOW__EFFOPT__GPU_POOL_UNIT", "milli")
    monkeypatch.setenv("AIRFLOW__EFFOPT__GPU_QUOTAS", "team-a:T4=1,team-b:*=2")
    reload_settings()
    with DAG("e", schedule=None):
        milli = GpuPythonOperator(task_id="m", python_callable=print, gpu_milli=600)
        quota = GpuPythonOperator(task_id="q", python_callable=print, models=["T4"], tenant="team-a")
        anymodel = GpuPythonOperator(task_id="r", python_callable=print, tenant="team-b", gpus=2)
    assert (milli.pool_slots, quota.pool, quota.pool_slots, anymodel.pool, anymodel.pool_slots) == \
        (600, "effopt_quota_team-a_T4", 1000, "effopt_quota_team-b", 2000)
    with DAG("f", schedule=None):
        @gpu_task(gpu_milli=250)
        def shard(x):
            return x

        mapped = shard.expand(x=[1, 2, 3]).operator  # the scheduler sees the mapped task's pool and slots
    assert (mapped.partial_kwargs["pool"], mapped.partial_kwargs["pool_slots"]) == ("effopt_gpu", 250)
    unmapped = mapped.unmap({"op_kwargs": {"x": 1}})
    assert (unmapped.pool, unmapped.pool_slots, unmapped.gpu_request.gpu_milli) == ("effopt_gpu", 250, 250)


def test_bad_requests_fail_when_the_dag_is_parsed():
    from effopt.operators.gpu import GpuPythonOperator

    with pytest.raises(LeaseRequestError, match="gpu_milli=1500 with gpus=2: gpu_milli is thousandths of ONE GPU"):
        GpuPythonOperator(task_id="x", python_callable=print, gpus=2, gpu_milli=1500)
    with pytest.raises(LeaseRequestError, match="gpu_memory_gib must be a number >= 0"):
        GpuPythonOperator(task_id="y", python_callable=print, gpu_memory_gib=-1)


def test_execute_leases_hands_over_the_devices_and_releases(gpus):
    from effopt.operators.gpu import GpuPythonOperator

    seen = {}

    def body():
        seen["cuda"] = os.environ["CUDA_VISIBLE_DEVICES"]
        seen["nvidia"] = os.environ["NVIDIA_VISIBLE_DEVICES"]
        seen["leases"] = [x.holder for x in _manager().list()]
        return "done"

    ti = FakeTI("two")
    op = GpuPythonOperator(task_id="two", python_callable=body, gpus=2)
    assert op.execute({"ti": ti}) == "done"
    assert seen == {"cuda": "0,1", "nvidia": "0,1", "leases": ["dag|two|run|-1|1"]}
    assert ti.xcom["effopt_gpu_lease"]["devices"] == [0, 1] and ti.xcom["effopt_gpu_lease"]["node"] == "box"
    assert _manager().list() == []  # released after success
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # the worker's environment as it was


def test_a_failing_task_releases_its_lease(gpus):
    from effopt.operators.gpu import GpuPythonOperator

    def boom():
        assert len(_manager().list()) == 1
        raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError, match="training diverged"):
        GpuPythonOperator(task_id="fail", python_callable=boom).execute({"ti": FakeTI("fail")})
    assert _manager().list() == []


def test_on_kill_releases_the_lease(gpus):
    from effopt.operators.gpu import GpuPythonOperator

    op = GpuPythonOperator(task_id="killed", python_callable=print)
    lease = op._gpu_begin({"ti": FakeTI("killed")})
    op._gpu_lease = lease
    assert [x.lease_id for x in _manager().list()] == [lease.lease_id]
    op.on_kill()  # what the task runner calls on SIGTERM
    assert _manager().list() == []


def test_no_capacity_defers_to_the_capacity_trigger_without_a_lease(gpus):
    from airflow.sdk.exceptions import TaskDeferred

    from effopt.operators.gpu import GpuPythonOperator
    from effopt.triggers.gpu import GpuCapacityTrigger

    manager = _manager()
    held = manager.acquire(LeaseRequest(1, 700), Holder("other", "a", "r"))
    held2 = manager.acquire(LeaseRequest(1, 700), Holder("other", "b", "r"))
    op = GpuPythonOperator(task_id="waits", python_callable=print, gpu_milli=600)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": FakeTI("waits")})
    trigger = deferred.value.trigger
    assert isinstance(trigger, GpuCapacityTrigger) and deferred.value.method_name == "_gpu_resume"
    classpath, kwargs = trigger.serialize()
    assert classpath == "effopt.triggers.gpu.GpuCapacityTrigger"
    assert kwargs["request"] == {"gpus": 1, "gpu_milli": 600, "gpu_memory_mib": 0, "models": [], "nodes": ["box"]}
    assert GpuCapacityTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert [x.holder for x in manager.list()] == ["other|a|r|-1|1", "other|b|r|-1|1"]

    async def first_event():
        return await trigger.run().__anext__()

    async def wait_then_free():
        task = asyncio.ensure_future(first_event())
        await asyncio.sleep(0.3)
        assert not task.done()  # nothing fits: the trigger keeps polling
        manager.release(held)
        return await asyncio.wait_for(task, 30)

    trigger.poll_interval_s = 0.1
    event = asyncio.run(wait_then_free())
    assert event.payload == {"status": "fits", "node": "box", "gpus": [0]}
    # Resumed, the task leases and runs.
    ti = FakeTI("waits")
    op2 = GpuPythonOperator(task_id="waits", python_callable=lambda: os.environ["CUDA_VISIBLE_DEVICES"], gpu_milli=600)
    assert op2._gpu_resume({"ti": ti}, event.payload) == "0"
    manager.release(held2)


def test_a_wait_keeps_its_deadline_across_resumes_and_then_fails_without_a_retry(gpus):
    """Resumed because it fit, then beaten to the GPU by another task: it waits again until the same deadline."""
    from airflow.sdk.exceptions import TaskDeferred

    from effopt.operators.gpu import GpuPythonOperator

    manager = _manager()
    held = [manager.acquire(LeaseRequest(1, 700), Holder("other", t, "r")) for t in ("a", "b")]
    op = GpuPythonOperator(task_id="waits", python_callable=print, gpu_milli=600, gpu_wait_timeout_s=60)
    with pytest.raises(TaskDeferred) as first:
        op.execute({"ti": FakeTI("waits")})
    deadline = first.value.kwargs["gpu_timeout_at"]
    assert deadline == first.value.trigger.timeout_at and deadline > 0
    with pytest.raises(TaskDeferred) as again:  # "fits" fired, but the GPUs are taken again
        op._gpu_resume({"ti": FakeTI("waits")}, {"status": "fits"}, gpu_timeout_at=deadline)
    assert again.value.kwargs["gpu_timeout_at"] == again.value.trigger.timeout_at == deadline
    with pytest.raises(AirflowSensorTimeout, match="no GPU capacity for 600 thousandths of a GPU within 60 s"):
        op._gpu_resume({"ti": FakeTI("waits")}, {"status": "timeout"}, gpu_timeout_at=deadline)
    for lease in held:
        manager.release(lease)


def test_a_policy_typo_fails_when_the_dag_is_parsed_and_gpu_policy_is_policy():
    from airflow.sdk import DAG

    from effopt.decorators import gpu_task
    from effopt.operators.gpu import GpuPythonOperator
    from effopt.sensors.gpu import GpuCapacitySensor

    with pytest.raises(LeaseRequestError, match="gpu_policy 'bestfit' is not a placement policy .known: .*best-fit"):
        GpuPythonOperator(task_id="x", python_callable=print, gpu_policy="bestfit")
    with pytest.raises(LeaseRequestError, match="gpu_policy 'fdg'"):
        GpuCapacitySensor(task_id="s", gpu_policy="fdg")
    with DAG("policy", schedule=None):
        @gpu_task(gpu_policy="best-fit")
        def train():
            return 1

        assert train().operator.gpu_policy == "best-fit"
    with pytest.raises(ValueError, match="policy='fgd' and gpu_policy='best-fit': give one"):
        gpu_task(policy="fgd", gpu_policy="best-fit")(print)


def test_a_mig_slice_without_its_uuid_fails_before_the_task_runs(tmp_path, monkeypatch):
    """A static MIG slice has no UUID; CUDA would read its position as a whole GPU's index."""
    from airflow.sdk.exceptions import AirflowFailException

    from effopt.operators.gpu import GpuPythonOperator

    path = tmp_path / "mig.yaml"
    path.write_text("nodes:\n  - name: box\n    gpus:\n      - {index: 0, model: A100-SXM4-40GB, memory_mib: 40960}\n"
                    "      - {index: 1, model: A100-SXM4-40GB, memory_mib: 40960, mig: [3g.20gb, 3g.20gb]}\n")
    monkeypatch.setenv("AIRFLOW__EFFOPT__GPU_INVENTORY", "static")
    monkeypatch.setenv("AIRFLOW__EFFOPT__GPU_INVENTORY_FILE", str(path))
    monkeypatch.setenv("AIRFLOW__EFFOPT__STORE_URL", f"sqlite:///{tmp_path}/effopt.db")
    monkeypatch.delenv("AIRFLOW_CONN_EFFOPT_REDIS", raising=False)
    reload_settings()
    ran = []
    try:
        op = GpuPythonOperator(task_id="mig", python_callable=lambda: ran.append(1), models=["mig-3g.20gb"])
        with pytest.raises(AirflowFailException, match="MIG slice.* have no UUID in the inventory"):
            op.execute({"ti": FakeTI("mig")})
        assert ran == [] and _manager().list() == []  # never ran; its lease released
    finally:
        monkeypatch.undo()
        reload_settings()


def test_the_capacity_trigger_ends_on_a_configuration_error(gpus, monkeypatch):
    """A rejected Redis password is the same at every poll: the wait ends with an error, not forever."""
    import redis.exceptions

    from effopt.triggers import gpu as gpu_trigger

    def rejected(request, policy):
        raise redis.exceptions.AuthenticationError("invalid username-password pair")

    monkeypatch.setattr(gpu_trigger, "where_it_fits", rejected)
    trigger = gpu_trigger.GpuCapacityTrigger({"gpus": 1, "gpu_milli": 600}, None, 0.05, None)
    event = asyncio.run(asyncio.wait_for(trigger.run().__anext__(), 30))
    assert event.payload == {"status": "error", "reason": "AuthenticationError: invalid username-password pair"}


def test_an_empty_inventory_runs_without_a_lease_and_says_so(no_gpus, capsys):
    from effopt.operators.gpu import GpuPythonOperator

    op = GpuPythonOperator(task_id="cpu", python_callable=lambda: os.environ["CUDA_VISIBLE_DEVICES"])
    assert op.execute({"ti": FakeTI("cpu")}) == ""
    log = capsys.readouterr().out  # the task log (structlog writes it to the task's stdout here)
    assert "[warning  ] effopt: no GPU inventory" in log and "running without a GPU lease" in log


def test_an_impossible_request_fails_without_a_retry(gpus):
    from airflow.sdk.exceptions import AirflowFailException

    from effopt.operators.gpu import GpuPythonOperator

    with pytest.raises(AirflowFailException, match="3 GPUs asked, but no node has more than 2 GPUs of T4"):
        GpuPythonOperator(task_id="big", python_callable=print, gpus=3).execute({"ti": FakeTI("big")})
    with pytest.raises(AirflowFailException, match="unknown GPU model 'A100': the inventory has T4"):
        GpuPythonOperator(task_id="m", python_callable=print, models=["A100"]).execute({"ti": FakeTI("m")})


def test_the_worker_is_the_inventory_node_of_its_host(monkeypatch):
    import socket

    from effopt.gpu.inventory import GpuDevice, Inventory, InventoryNode
    from effopt.operators.gpu import worker_nodes

    two = Inventory.of([InventoryNode("n1", (GpuDevice(0, "T4"),)), InventoryNode(socket.gethostname(),
                                                                                  (GpuDevice(0, "T4"),))], "s", "")
    monkeypatch.delenv("EFFOPT_GPU_NODE", raising=False)
    assert worker_nodes(two) == (socket.gethostname(),)
    monkeypatch.setenv("EFFOPT_GPU_NODE", "n1")
    assert worker_nodes(two) == ("n1",)
    monkeypatch.setenv("EFFOPT_GPU_NODE", "n9")
    with pytest.raises(LeaseRequestError, match="EFFOPT_GPU_NODE='n9' is not a GPU node"):
        worker_nodes(two)
    monkeypatch.delenv("EFFOPT_GPU_NODE")
    others = Inventory.of([InventoryNode("n1", (GpuDevice(0, "T4"),)), InventoryNode("n2", (GpuDevice(0, "T4"),))],
                          "s", "")
    with pytest.raises(LeaseRequestError, match="is none of the inventory's GPU nodes"):
        worker_nodes(others)
    assert worker_nodes(Inventory.of([InventoryNode("only", (GpuDevice(0, "T4"),))], "s", "")) == ("only",)


def test_a_pod_is_pinned_to_the_leased_node_with_the_devices_in_its_limits(gpus, monkeypatch, tmp_path, kube_hook):
    from kubernetes.client import models as k8s

    from effopt.operators.gpu_kubernetes import GpuKubernetesPodOperator

    path = tmp_path / "cluster.yaml"
    path.write_text("nodes:\n  - {name: gpu-node-1, gpus: 4, model: A100}\n  - {name: gpu-node-2, gpus: 2, model: A100}"
                    "\n  - name: mig-node\n    gpus: [{model: A100, mig: [3g.20gb]}]\n")
    monkeypatch.setenv("AIRFLOW__EFFOPT__GPU_INVENTORY_FILE", str(path))
    reload_settings()
    affinity = k8s.V1Affinity(pod_anti_affinity=k8s.V1PodAntiAffinity())
    op = GpuKubernetesPodOperator(task_id="train", name="train", image="trainer:1", gpus=2, affinity=affinity,
                                  container_resources=k8s.V1ResourceRequirements(limits={"memory": "8Gi"}))
    lease = op._gpu_begin({"ti": FakeTI("train")})
    assert lease.node in ("gpu-node-1", "gpu-node-2")  # any node: the pod runs there, not on this worker
    op._gpu_hand_over(lease)
    pod = op.build_pod_request_obj()
    terms = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms
    assert [(e.key, e.operator, e.values) for e in terms[0].match_fields] == [("metadata.name", "In", [lease.node])]
    assert terms[0].match_expressions is None  # the Node's name, not its hostname label
    assert pod.spec.affinity.pod_anti_affinity is not None  # what the user gave stays
    resources = pod.spec.containers[0].resources
    assert resources.limits == {"memory": "8Gi", "nvidia.com/gpu": "2"}
    assert resources.requests == {"nvidia.com/gpu": "2"}
    assert pod.metadata.labels["effopt.io/gpu-lease"] == lease.lease_id
    op._gpu_lease, op._gpu_manager = lease, _manager()
    op._gpu_release()
    mig = GpuKubernetesPodOperator(task_id="slice", name="slice", image="x", models=["3g.20gb"])
    slice_lease = mig._gpu_begin({"ti": FakeTI("slice")})
    mig._gpu_hand_over(slice_lease)
    assert mig.build_pod_request_obj().spec.containers[0].resources.limits == {"nvidia.com/mig-3g.20gb": "1"}
    with pytest.raises(ValueError, match="deferrable=False"):
        GpuKubernetesPodOperator(task_id="d", name="d", image="x", deferrable=True)


def test_the_sensor_is_done_when_it_fits_defers_when_not_and_fails_when_it_never_can(gpus):
    from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

    from effopt.sensors.gpu import GpuCapacitySensor

    assert GpuCapacitySensor(task_id="s", gpus=2).execute({}) == {"node": "box", "gpus": [0, 1]}
    held = _manager().acquire(LeaseRequest(1), Holder("d", "a", "r"))
    with pytest.raises(TaskDeferred) as deferred:
        GpuCapacitySensor(task_id="s", gpus=2, timeout=600).execute({})
    assert deferred.value.trigger.request["gpus"] == 2
    poking = GpuCapacitySensor(task_id="p", gpus=2, deferrable=False)
    assert poking.poke({}).is_done is False
    _manager().release(held)
    assert poking.poke({}).is_done is True
    with pytest.raises(AirflowFailException, match="unknown GPU model 'H100'"):
        GpuCapacitySensor(task_id="x", models=["H100"]).execute({})
    with pytest.raises(AirflowSensorTimeout, match="no GPU capacity for 2 GPUs within 600 s"):
        GpuCapacitySensor(task_id="s", gpus=2, timeout=600).execute_complete({}, {"status": "timeout"})


def test_graph_gpu_nodes_take_leases_in_the_gpu_pool(gpus, monkeypatch):
    from pathlib import Path

    from effopt.compiler import required_pools
    from effopt.graph import compile_spec
    from effopt.operators.gpu import GpuGraphNodeOperator

    spec = Path(__file__).resolve().parents[2] / "include" / "graphs" / "gpu_training.yaml"
    monkeypatch.setenv("AIRFLOW__EFFOPT__GPU_POOL_UNIT", "milli")
    reload_settings()
    from effopt.compiler import dag_for_plan

    compiled = compile_spec(spec, Path(os.environ["AIRFLOW_HOME"]) / "gpu-test-plans")
    dag = dag_for_plan(compiled, spec)
    train = dag.get_task("train_mlp")
    assert isinstance(train, GpuGraphNodeOperator)
    assert (train.pool, train.pool_slots, train.gpu_request.gpus, train.gpu_request.gpu_memory_mib) == \
        ("effopt_gpu", 1000, 1, 1024)
    assert not isinstance(dag.get_task("train_ridge"), GpuGraphNodeOperator)
    pools = required_pools(compiled, serial_pool="effopt_serial", gpu_pool="effopt_gpu")
    assert pools["effopt_gpu"]["slots"] == 1000 and pools["effopt_gpu"]["largest_request"] == 1000


def test_the_page_s_gpu_section():
    from effopt.www.page import gpu_section

    empty = {"inventory": {"nodes": [], "source": "static", "detail": "[effopt] gpu_inventory_file is not set",
                           "taken_at": 100.0, "gpus": 0, "summary": "no GPUs in the inventory"},
             "origin": "effopt_gpu_pools", "pools": [], "changes": [], "errors": {}}
    assert "No GPUs in the inventory (source static: [effopt] gpu_inventory_file is not set" in gpu_section(
        empty, 160.0)
    lease = {"lease_id": "abc", "node": "box", "devices": [1], "model": "T4", "gpu_milli": 600, "acquired_at": 100.0,
             "expires_at": 190.0, "holder_info": {"dag_id": "effopt_gpu_example", "task_id": "gpu_task_1",
                                                  "run_id": "manual__1"}}
    full = {"inventory": {"nodes": [{"name": "box", "gpus": [{"index": 0, "memory_total_mib": 15360},
                                                             {"index": 1, "memory_total_mib": 15360}]}],
                          "source": "static", "detail": "gpus.yaml", "taken_at": 100.0, "gpus": 2,
                          "summary": "2 GPUs on 1 node: 2 x T4"},
            "origin": "effopt_gpu_pools", "unit": "milli", "policy": "effopt", "backend": "redis",
            "gpus": [{"node": "box", "device": 0, "model": "T4", "leased_milli": 0, "other_milli": 0},
                     {"node": "box", "device": 1, "model": "T4", "leased_milli": 600, "other_milli": 0}],
            "leases": [lease], "hidden_leases": 1,
            "fragmentation": {"free_milli": 1400, "fragmented_milli": 400, "fragmented_pct": 28.6, "types": 1},
            "pools": [{"pool": "effopt_gpu", "slots": 2000, "running": 1, "queued": 0, "scheduled": 0, "deferred": 1,
                       "open": 1000, "description": ""}],
            "changes": [{"changed_at": 100.0, "pool": "effopt_gpu", "action": "update", "slots_before": 1000,
                         "slots_after": 2000, "reason": "2 x T4", "dry_run": False}], "errors": {}}
    html = gpu_section(full, 160.0)
    for text in ("2 GPUs on 1 node: 2 x T4", "28.6%", "0.6 of 2", "1 of other DAGs", "gpu_task_1", "manual__1",
                 "600 thousandths", "expires in", "effopt_gpu", "Pool changes", "thousandths of a GPU"):
        assert text in html, text
