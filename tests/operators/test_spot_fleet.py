"""The spot operators executed in-process: placement from the catalog and the task-usage history, fleets on the
moto server (``aws_env``: the ``aws_default`` connection points at it), release, cleanup, and skipping without
an AWS connection.  Capacity errors, tokens and crashes are tested against the fake EC2 client
(tests/spot/test_fleet.py): moto has none of them.
"""

from __future__ import annotations

import json
import logging
import time
from types import SimpleNamespace

import boto3
import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from effopt.airflow_settings import get_store
from effopt.operators.spot import (
    SpotCleanupOperator,
    SpotFleetOperator,
    SpotPlacementOperator,
    SpotReleaseOperator,
    exclusions,
    remaining_work,
)
from effopt.store import TaskUsageRecord

JOB = {"hours": 1, "vcpus": 2, "memory_gib": 4, "deadline_hours": 3, "checkpoint_hours": 0.25,
       "regions": ["us-east-1"]}


def _context(task_id: str, run_id: str, try_number: int = 1, dag_id: str = "spot_ops"):
    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=-1, try_number=try_number)
    return {"ti": ti, "run_id": run_id}


@pytest.fixture
def ec2(moto_server, monkeypatch):
    """``aws_default`` on the session's moto server, not reset (a reset reloads moto's AMIs, seconds each time):
    every test works in a run id of its own."""
    from tests.conftest import aws_connection_env

    for key, value in aws_connection_env(moto_server).items():
        monkeypatch.setenv(key, value)
    client = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_server.url)
    if not client.describe_launch_templates(Filters=[{"Name": "launch-template-name", "Values": ["effopt-spot"]}])[
            "LaunchTemplates"]:
        ami = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        client.create_launch_template(LaunchTemplateName="effopt-spot", LaunchTemplateData={"ImageId": ami})
    return client


def _live(ec2, run_id: str) -> dict[str, str]:
    found = ec2.describe_instances(Filters=[{"Name": "tag:effopt:run", "Values": [run_id]}])["Reservations"]
    return {i["InstanceId"]: i["State"]["Name"] for r in found for i in r["Instances"]}


def test_placement_takes_the_hours_from_the_task_history_and_is_recorded():
    store = get_store()
    now = time.time()
    for i, wall in enumerate((3000.0, 3600.0, 4200.0, 100.0)):
        store.record_task_usage(TaskUsageRecord("train_hist", "fit", f"r{i}", -1, 1, "h", 1, now - 9000 + i,
                                                now - 5000 + i, wall, 1.0, 0.0, 1.0, 1, 1, "span",
                                                "failed" if wall == 100.0 else "success"))
    out = SpotPlacementOperator(task_id="place", history_task="train_hist.fit",
                                **{k: v for k, v in JOB.items() if k != "hours"}).execute(_context("place", "r-hist"))
    assert out["job"]["hours"] == 1.0  # the median of 3000, 3600 and 4200 s; the failed try does not count
    assert "median wall time of 3 successful tries" in out["hours_source"]
    assert len(out["ranked"]) <= 10 < out["ranked_total"] and json.loads(json.dumps(out)) == out
    (decision,) = [d for d in store.spot_decisions() if d["run_id"] == "r-hist"]
    assert decision["capacity"] == out["capacity"] and decision["offering"] == out["primary"]["instance_type"] + \
        " spot us-east-1/" + out["primary"]["az_id"]
    with pytest.raises(AirflowFailException, match="no successful try"):
        SpotPlacementOperator(task_id="place", history_task="train_hist.nothing").execute(_context("place", "r-x"))
    with pytest.raises(AirflowFailException, match="hours is empty"):
        SpotPlacementOperator(task_id="place").execute(_context("place", "r-x"))


def test_exclusions_and_the_work_left_after_an_interruption():
    assert exclusions({"exclude": [["m5.large", "use1-az1"]]}) == [("m5.large", "use1-az1")]
    assert exclusions(["m5.large|us-east-1|use1-az2|spot", {"instance_type": "c5.large", "az_id": "use1-az3"}]) == [
        ("m5.large", "use1-az2"), ("c5.large", "use1-az3")]
    with pytest.raises(ValueError, match="exclude item"):
        exclusions([42])
    fleet = {"instances": [{"launched_at": 0.0}]}
    # 50 minutes in, checkpoints every 15: 45 minutes are saved, 15 are left; 2 h 10 min to the deadline.
    left = remaining_work(fleet, {"at": 3000.0}, hours=1.0, deadline_hours=3.0, checkpoint_hours=0.25, now=3000.0)
    assert left["hours"] == pytest.approx(0.25) and left["deadline_hours"] == pytest.approx(3.0 - 3000 / 3600)
    assert left["capacity_types"] == ["spot", "on-demand"]
    late = remaining_work(fleet, {"at": 9000.0}, hours=3.0, deadline_hours=3.0, checkpoint_hours=0.5, now=9000.0)
    # 2.5 h in, 0.5 h left after the 2.5 h checkpoint, 0.5 h to the deadline < 0.5 h + a 0.2 h changeover:
    # only on-demand, now.
    assert late["capacity_types"] == ["on-demand"] and late["deadline_hours"] is None
    with pytest.raises(AirflowSkipException, match="nothing to relaunch"):
        remaining_work(fleet, {"at": 7200.0}, hours=1.0, deadline_hours=None, checkpoint_hours=0.0, now=7200.0)


def test_a_fleet_on_moto_is_recorded_released_and_its_credentials_never_logged(ec2, caplog, monkeypatch):
    secret = "s3cr3t-e2e-fleet-key-0123456789"
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
        "conn_type": "aws", "login": "AKIAFLEETTEST", "password": secret,
        "extra": {"region_name": "us-east-1",
                  "endpoint_url": ec2.meta.endpoint_url}}))
    caplog.set_level(logging.DEBUG)
    run_id = f"r-fleet-{time.time_ns()}"
    placement = SpotPlacementOperator(task_id="place", **JOB).execute(_context("place", run_id))
    out = SpotFleetOperator(task_id="fleet", placement=placement, launch_template="effopt-spot", count=2).execute(
        _context("fleet", run_id))
    assert len(out["instance_ids"]) == 2 and out["capacity"] == {"spot": 2, "on-demand": 0}
    assert set(_live(ec2, run_id).values()) == {"running"}
    recorded = {r["instance_id"]: r for r in get_store().spot_instances(run_id=run_id)}
    assert set(recorded) == set(out["instance_ids"])
    assert all(r["usd_per_hour"] == placement["pools"][0]["usd_per_hour"] and r["ended_at"] is None
               for r in recorded.values())
    released = SpotReleaseOperator(task_id="cleanup").execute(_context("cleanup", run_id))
    assert sorted(released["terminated"]) == sorted(out["instance_ids"])
    assert set(_live(ec2, run_id).values()) == {"terminated"}
    assert all(r["ended_at"] for r in get_store().spot_instances(run_id=run_id))
    assert secret not in caplog.text and secret not in json.dumps(out) and secret not in json.dumps(placement)


def test_a_missing_launch_template_fails_at_once_and_on_kill_takes_the_instances_back(ec2):
    run_id = f"r-kill-{time.time_ns()}"
    placement = SpotPlacementOperator(task_id="place", **JOB).execute(_context("place", run_id))
    with pytest.raises(AirflowFailException, match="not retried|InvalidLaunchTemplate"):
        SpotFleetOperator(task_id="fleet", placement=placement, launch_template="no-such-template").execute(
            _context("fleet", run_id))
    op = SpotFleetOperator(task_id="fleet", placement=placement, launch_template="effopt-spot")
    out = op.execute(_context("fleet", run_id, try_number=2))
    op.on_kill()  # the task is killed while the instances are its own
    assert _live(ec2, run_id) == dict.fromkeys(out["instance_ids"], "terminated")


def test_the_cleanup_operator_terminates_orphans_by_the_rest_api_s_states(ec2, monkeypatch):
    from effopt.hooks.airflow_api import AirflowApiHook

    run_id = f"r-clean-{time.time_ns()}"
    placement = SpotPlacementOperator(task_id="place", **JOB).execute(_context("place", run_id))
    dag = f"spot_ops_cleanup_{time.time_ns()}"  # moto is not reset between tests: a DAG of its own
    kept = SpotFleetOperator(task_id="fleet", placement=placement, launch_template="effopt-spot").execute(
        _context("fleet", run_id, dag_id=dag))
    gone = SpotFleetOperator(task_id="fleet2", placement=placement, launch_template="effopt-spot").execute(
        _context("fleet2", run_id, dag_id=dag))
    states = {"fleet": {"state": "success", "try_number": 1}, "fleet2": {"state": "failed", "try_number": 1}}
    monkeypatch.setattr(AirflowApiHook, "dag_run", lambda self, dag_id, rid: {"state": "running"})
    monkeypatch.setattr(AirflowApiHook, "task_instance", lambda self, dag_id, rid, task_id, mi: states.get(task_id))
    dry = SpotCleanupOperator(task_id="cleanup", dry_run=True, min_age_minutes=0, dag_ids=[dag]).execute(
        _context("cleanup", "r-cleanup", dag_id="effopt_spot_cleanup"))
    assert [o["instance_id"] for o in dry["orphans"]] == gone["instance_ids"] and dry["terminated"] == []
    out = SpotCleanupOperator(task_id="cleanup", min_age_minutes=0, dag_ids=[dag]).execute(
        _context("cleanup", "r-cleanup", dag_id="effopt_spot_cleanup"))
    assert out["terminated"] == gone["instance_ids"] and "fleet2, try 1) is failed" in out["orphans"][0]["reason"]
    assert _live(ec2, run_id) == {kept["instance_ids"][0]: "running", gone["instance_ids"][0]: "terminated"}
    (ended,) = [r for r in get_store().spot_instances(run_id=run_id) if r["ended_at"]]
    assert ended["instance_id"] == gone["instance_ids"][0] and "orphan" in ended["end_reason"]


def test_without_an_aws_connection_the_aws_tasks_skip_and_placement_still_works(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    placement = SpotPlacementOperator(task_id="place", hours=1, vcpus=2, memory_gib=4).execute(
        _context("place", "r-none"))
    assert placement["regions_source"] == "every region of the catalog" and placement["catalog_source"]
    for op in (SpotFleetOperator(task_id="fleet", placement=placement, launch_template="t"),
               SpotReleaseOperator(task_id="cleanup"), SpotCleanupOperator(task_id="cleanup")):
        with pytest.raises(AirflowSkipException, match="AIRFLOW_CONN_AWS_DEFAULT='"):
            op.execute(_context(op.task_id, "r-none"))


def test_the_sensor_polls_without_deferring(monkeypatch):
    from effopt.sensors.spot import SpotInterruptionSensor
    from tests.operators.test_spot_interruption import ImdsStandIn, in_thread

    imds = ImdsStandIn(action_after=1)
    try:
        sensor = SpotInterruptionSensor(task_id="watch", source="imds", imds_url=imds.url, deferrable=False,
                                        poll_interval_s=0.05, wait_s=30)
        sensor._trigger = sensor._make_trigger()
        first = in_thread(sensor.poke, _context("watch", "r-poke"))
        second = in_thread(sensor.poke, _context("watch", "r-poke"))
    finally:
        imds.close()
    assert first.is_done is False and second.is_done is True
    assert second.xcom_value["exclude"] == [["m5.large", "use1-az1"]]
    assert second.xcom_value["offering"]["instance_id"] == "i-0abc"


def test_an_interruption_from_the_metadata_stand_in_relaunches_on_another_offering(monkeypatch):
    """IMDS stand-in -> the sensor's event -> placement without the interrupted pool -> a fleet elsewhere
    (on the fake EC2 client: the first launch lands in the first pool, the relaunch must not)."""
    from effopt.operators import spot as spot_ops
    from effopt.sensors.spot import SpotInterruptionSensor
    from tests.operators.test_spot_interruption import ImdsStandIn, in_thread
    from tests.spot.fake_ec2 import FakeEc2

    fake = FakeEc2(default_capacity={"spot": 5, "on-demand": 5})
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "extra": {
        "region_name": "us-east-1"}}))
    monkeypatch.setattr(spot_ops, "ec2_client", lambda conn_id: fake.client())
    run_id = f"r-imds-{time.time_ns()}"
    placement = SpotPlacementOperator(task_id="place", **JOB).execute(_context("place", run_id))
    first = SpotFleetOperator(task_id="fleet", placement=placement, launch_template="effopt-spot").execute(
        _context("fleet", run_id))
    (inst,) = first["instances"]
    first = placement["pools"][0]
    assert inst["offering"] == f"{first['instance_type']}|us-east-1|{first['az_id']}|spot"
    imds = ImdsStandIn(action_after=0)
    try:
        # The instance's own metadata says which instance it is: point the stand-in's identity at the fleet's.
        sensor = SpotInterruptionSensor(task_id="watch", source="imds", imds_url=imds.url, deferrable=False,
                                        poll_interval_s=0.05, wait_s=30)
        sensor._trigger = sensor._make_trigger()
        sensor._identity = {"instance_id": inst["instance_id"], "instance_type": inst["instance_type"],
                            "az_id": inst["az_id"], "region": "us-east-1", "zone": inst["zone"]}
        notice = in_thread(sensor.poke, _context("watch", run_id)).xcom_value
    finally:
        imds.close()
    assert notice["exclude"] == [[inst["instance_type"], inst["az_id"]]]
    replace = SpotPlacementOperator(task_id="replace", exclude=notice, **JOB).execute(_context("replace", run_id))
    again = SpotFleetOperator(task_id="relaunch", placement=replace, launch_template="effopt-spot").execute(
        _context("relaunch", run_id))
    (moved,) = again["instances"]
    assert moved["offering"] != inst["offering"] and moved["az_id"] != inst["az_id"]
    assert set(fake.live()) == {inst["instance_id"], moved["instance_id"]}
