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
    monkeypatch.setattr(AirflowApiHook, "request", lambda self, method, path, payload=None: {"version": "3.3.0"})
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


# -- deployments, the REST API check, AWS configuration errors, regions (on the fake EC2 client) -----------------
@pytest.fixture
def fake_aws(monkeypatch):
    """``aws_default`` defined (us-east-1) and every EC2 client of the operators the fake one."""
    from effopt.operators import spot as spot_ops
    from tests.spot.fake_ec2 import FakeEc2

    fake = FakeEc2(default_capacity={"spot": 5, "on-demand": 5})
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "extra": {
        "region_name": "us-east-1"}}))
    monkeypatch.setattr(spot_ops, "ec2_client", lambda conn_id: fake.client())
    return fake


@pytest.fixture
def as_deployment(monkeypatch):
    """``as_deployment("prod")``: ``[effopt] deployment_id`` from now on ("" unsets it)."""
    from effopt.airflow_settings import get_settings

    def switch(name: str) -> None:
        monkeypatch.setenv("AIRFLOW__EFFOPT__DEPLOYMENT_ID", name)
        get_settings.cache_clear()

    yield switch
    monkeypatch.delenv("AIRFLOW__EFFOPT__DEPLOYMENT_ID", raising=False)
    get_settings.cache_clear()


def _api_ok(monkeypatch, dag_run=lambda self, dag_id, rid: None, task_instance=lambda self, *a: None):
    from effopt.hooks.airflow_api import AirflowApiHook

    monkeypatch.setattr(AirflowApiHook, "request", lambda self, method, path, payload=None: {"version": "3.3.0"})
    monkeypatch.setattr(AirflowApiHook, "dag_run", dag_run)
    monkeypatch.setattr(AirflowApiHook, "task_instance", task_instance)


def test_release_and_cleanup_touch_only_this_deployment_s_instances(fake_aws, as_deployment, monkeypatch):
    """Prod and staging share an AWS account and run the same DAG with the same scheduled run id."""
    import hashlib

    from effopt.airflow_settings import get_settings
    from effopt.operators.spot import owner_of

    run_id = "scheduled__2026-12-01T00:00:00+00:00"
    dag = f"shared_{time.time_ns()}"
    placement = SpotPlacementOperator(task_id="place", **JOB).execute(_context("place", run_id, dag_id=dag))
    as_deployment("prod")
    prod = SpotFleetOperator(task_id="fleet", placement=placement, launch_template="effopt-spot").execute(
        _context("fleet", run_id, dag_id=dag))
    (prod_id,) = prod["instance_ids"]
    assert fake_aws.tags(prod_id)["effopt:deployment"] == "prod"
    as_deployment("staging")
    staging = SpotFleetOperator(task_id="fleet", placement=placement, launch_template="effopt-spot").execute(
        _context("fleet", run_id, dag_id=dag))
    (staging_id,) = staging["instance_ids"]
    assert staging_id != prod_id and staging["calls"][0]["client_token"] != prod["calls"][0]["client_token"]
    released = SpotReleaseOperator(task_id="cleanup").execute(_context("cleanup", run_id, dag_id=dag))
    assert released["terminated"] == [staging_id] and set(fake_aws.live()) == {prod_id}
    _api_ok(monkeypatch)  # staging's REST API has never heard of prod's run: 404
    out = SpotCleanupOperator(task_id="cleanup", min_age_minutes=0, dag_ids=[dag]).execute(
        _context("cleanup", "r-cleanup", dag_id="effopt_spot_cleanup"))
    assert out["seen"] == 0 and out["terminated"] == [] and set(fake_aws.live()) == {prod_id}
    # Without [effopt] deployment_id: 12 hex digits of sha256 of the store URL (never the URL itself).
    as_deployment("")
    expected = hashlib.sha256(get_settings().store_url.encode()).hexdigest()[:12]
    assert owner_of(_context("fleet", run_id)).deployment == expected


class _ApiStandIn:
    """Airflow's REST API as the cleanup meets it: ``POST /auth/token`` and ``GET /api/v2/...`` answer with the
    status codes set in ``token`` and ``get``."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from threading import Thread

        self.token, self.get = 200, 200
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._send(standin.token, {"access_token": "tok"} if standin.token == 200 else {"detail": "no"})

            def do_GET(self) -> None:  # noqa: N802
                self._send(standin.get, {"version": "3.3.0"} if standin.get == 200 else {"detail": "no"})

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"http://effopt:pw@127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_cleanup_fails_at_once_without_the_api_connection_or_with_a_refused_login(fake_aws, monkeypatch):
    run_id = f"r-api-{time.time_ns()}"
    dag = f"api_{time.time_ns()}"
    placement = SpotPlacementOperator(task_id="place", **JOB).execute(_context("place", run_id, dag_id=dag))
    (inst,) = SpotFleetOperator(task_id="fleet", placement=placement, launch_template="effopt-spot").execute(
        _context("fleet", run_id, dag_id=dag))["instance_ids"]
    ctx = _context("cleanup", "r-cleanup", dag_id="effopt_spot_cleanup")
    monkeypatch.delenv("AIRFLOW_CONN_EFFOPT_AIRFLOW_API", raising=False)
    with pytest.raises(AirflowFailException, match="connection 'effopt_airflow_api'.*AIRFLOW_CONN_EFFOPT_AIRFLOW_API"):
        SpotCleanupOperator(task_id="cleanup", min_age_minutes=0, dag_ids=[dag]).execute(ctx)
    api = _ApiStandIn()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_EFFOPT_AIRFLOW_API", api.uri)
        for token, get, code in ((401, 200, 401), (200, 403, 403)):
            api.token, api.get = token, get
            with pytest.raises(AirflowFailException, match=f"'effopt_airflow_api'.*HTTP {code}") as failed:
                SpotCleanupOperator(task_id="cleanup", min_age_minutes=0, dag_ids=[dag]).execute(ctx)
            assert "\n" not in str(failed.value)
        # The API down (5xx): not a configuration error; every owner's state is unknown and its instances kept.
        api.token, api.get = 200, 503
        out = SpotCleanupOperator(task_id="cleanup", min_age_minutes=0, dag_ids=[dag]).execute(ctx)
    finally:
        api.close()
    assert out["seen"] == 1 and out["terminated"] == [] and "unknown" in out["errors"][0]
    assert inst in fake_aws.live()


def test_an_aws_connection_without_a_region_or_credentials_fails_at_once_naming_it(monkeypatch):
    for key in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-profile lookup here
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "extra": {}}))
    # The snapshot needs no AWS account, but with no regions given the placement asks the connection for its own.
    with pytest.raises(AirflowFailException, match="connection 'aws_default'.*no region: set region_name") as failed:
        SpotPlacementOperator(task_id="place", hours=1, vcpus=2, memory_gib=4, price_source="snapshot").execute(
            _context("place", "r-noregion"))
    assert "\n" not in str(failed.value)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "extra": {
        "region_name": "us-east-1"}}))
    with pytest.raises(AirflowFailException, match="connection 'aws_default'.*no usable credentials"):
        SpotReleaseOperator(task_id="cleanup").execute(_context("cleanup", "r-nocreds"))
    # Any effopt task (the SQS sensor, say) classifies them as configuration errors too: not retried.
    from botocore.exceptions import NoCredentialsError, NoRegionError, PartialCredentialsError

    from effopt.operators.errors import classify

    assert {classify(e) for e in (NoRegionError(), NoCredentialsError(),
                                  PartialCredentialsError(provider="env", cred_var="secret_key"))} == {"config"}


def test_the_cleanup_reconciles_only_the_instances_recorded_in_its_region(fake_aws, monkeypatch):
    store = get_store()
    stamp = time.time_ns()
    row = {"fleet_id": None, "client_token": "effopt-x", "dag_id": "regions", "task_id": "fleet",
           "run_id": f"r-{stamp}", "map_index": -1, "try_number": 1, "instance_type": "m5.large", "az_id": None,
           "zone": None, "capacity": "spot", "usd_per_hour": 0.04, "launched_at": time.time() - 60}
    eu, us = f"i-eu{stamp}", f"i-us{stamp}"
    store.record_spot_instances([{**row, "instance_id": eu, "region": "eu-west-1"},
                                 {**row, "instance_id": us, "region": "us-east-1"}])
    _api_ok(monkeypatch)
    out = SpotCleanupOperator(task_id="cleanup", min_age_minutes=0).execute(
        _context("cleanup", "r-cleanup", dag_id="effopt_spot_cleanup"))
    # us-east-1's EC2 no longer runs its recorded instance; eu-west-1's is not its to judge.
    assert us in out["recorded_gone"] and eu not in out["recorded_gone"]
    ended = {r["instance_id"]: r["ended_at"] for r in store.spot_instances(run_id=f"r-{stamp}")}
    assert ended[eu] is None and ended[us] is not None
