"""Spot placement end to end in a real Airflow over REST, with the AWS connection pointing at the moto server.

``effopt_spot_example`` places a job, launches it with CreateFleet (checked on moto: an ``instant`` fleet, the
deterministic ClientToken, owner tags on the instance), waits deferred for an interruption notice from a real
SQS queue on moto (EventBridge's message format), and on the notice relaunches on another offering; its
teardown terminates the run's instances.  While it waits, ``effopt_spot_cleanup`` terminates an orphan and
keeps the running job's instance.  The AWS credentials of the connection never show in a task log, an XCom or
the effopt page.

moto ignores ClientToken, never returns Errors[] and has no interruptions of its own: those paths are tested
against the fake EC2 client (tests/spot/test_fleet.py); here the interruption is an event put on the queue.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request

import boto3
import pytest

from effopt.spot.fleet import Owner, client_token, deployment_of

pytestmark = pytest.mark.slow
DAG = "effopt_spot_example"


def _ec2_and_sqs(moto_server):
    kw = {"region_name": "us-east-1", "endpoint_url": moto_server.url, "aws_access_key_id": "testing",
          "aws_secret_access_key": "testing"}
    return boto3.client("ec2", **kw), boto3.client("sqs", **kw)


def _wait_state(client, dag_id: str, run_id: str, task_id: str, wanted: set[str], timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = client.task_states(dag_id, run_id).get(task_id)
        if state in wanted:
            return state
        assert state not in ("failed", "upstream_failed") and time.monotonic() < deadline, \
            f"{task_id} is {state}:\n" + client.failure_report(dag_id, run_id)
        time.sleep(1)


def _event(kind: str, instance_id: str, **detail) -> str:
    detail_type = {"interruption": "EC2 Spot Instance Interruption Warning",
                   "state": "EC2 Instance State-change Notification"}[kind]
    return json.dumps({"version": "0", "id": secrets.token_hex(8), "detail-type": detail_type, "source": "aws.ec2",
                       "account": "123456789012", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "region": "us-east-1", "detail": {"instance-id": instance_id, **detail}})


def test_the_spot_example_launches_relaunches_after_an_interruption_and_cleans_up(airflow, moto_server):
    client = airflow.client
    ec2, sqs = _ec2_and_sqs(moto_server)
    suffix = secrets.token_hex(4)
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    template = f"effopt-spot-e2e-{suffix}"
    ec2.create_launch_template(LaunchTemplateName=template, LaunchTemplateData={"ImageId": ami})
    subnets = {s["AvailabilityZoneId"]: s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]}
    queue = sqs.create_queue(QueueName=f"effopt-spot-events-{suffix}")["QueueUrl"]
    secret = "e2e-spot-secret-" + secrets.token_hex(12)
    client.request("POST", "/api/v2/connections", {
        "connection_id": f"e2e_spot_aws_{suffix}", "conn_type": "aws", "login": f"AKIAE2E{suffix.upper()}",
        "password": secret, "extra": json.dumps({"region_name": "us-east-1", "endpoint_url": moto_server.url})})
    conf = {"hours": 1, "deadline_hours": 3, "checkpoint_hours": 0.25, "vcpus": 2, "memory_gib": 4, "count": 1,
            "regions": ["us-east-1"], "launch_template": template, "subnet_ids": sorted(subnets.values()),
            "sqs_queue_url": queue, "work_minutes": 5, "poll_seconds": 1, "aws_conn_id": f"e2e_spot_aws_{suffix}"}
    client.wait_for_dag(DAG)
    client.unpause(DAG)
    run_id = client.trigger(DAG, conf)

    # -- launched: a well-formed instant fleet, tagged, in the placement's first pool ------------------------
    assert _wait_state(client, DAG, run_id, "watch", {"deferred"}) == "deferred"
    place = client.xcom(DAG, run_id, "place")
    fleet = client.xcom(DAG, run_id, "fleet")
    assert place["capacity"] == "spot" and place["fallback"]["capacity"] == "on-demand"
    (inst,) = fleet["instances"]
    first = place["pools"][0]
    assert (inst["instance_type"], inst["az_id"]) == (first["instance_type"], first["az_id"])
    deployment = deployment_of("", airflow.store_url)  # no [effopt] deployment_id: the store URL's hash
    token = client_token(Owner(DAG, "fleet", run_id, -1, 1, deployment=deployment), 0)
    assert inst["client_token"] == token and fleet["calls"][0]["client_token"] == token
    (described,) = ec2.describe_fleets(FleetIds=fleet["fleet_ids"])["Fleets"]
    assert described["Type"] == "instant"
    assert described["TargetCapacitySpecification"]["TotalTargetCapacity"] == 1
    assert described["TargetCapacitySpecification"]["DefaultTargetCapacityType"] == "spot"
    assert described["SpotOptions"]["AllocationStrategy"] == "price-capacity-optimized"
    (config,) = described["LaunchTemplateConfigs"]
    assert config["LaunchTemplateSpecification"]["LaunchTemplateName"] == template
    assert config["Overrides"] == [{"InstanceType": p["instance_type"], "SubnetId": subnets[p["az_id"]]}
                                   for p in place["pools"]]
    assert {t["Key"]: t["Value"] for t in described["Tags"]}["effopt:client-token"] == token
    live = ec2.describe_instances(InstanceIds=[inst["instance_id"]])["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in live["Tags"]}
    assert tags["effopt:managed"] == "true" and tags["effopt:dag"] == DAG and tags["effopt:run"] == run_id
    assert tags["effopt:task"] == "fleet" and tags["effopt:try"] == "1" and tags["effopt:client-token"] == token
    assert tags["effopt:deployment"] == deployment
    assert live["InstanceLifecycle"] == "spot" and live["Placement"]["AvailabilityZone"] == inst["zone"]

    # -- the hourly cleanup, while the job runs: the orphan goes, the job's instance stays --------------------
    gone = Owner(DAG, "fleet", "manual__a_run_long_gone", -1, 1, deployment=deployment)
    orphan = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t3.medium", TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in gone.tags().items()]}])[
        "Instances"][0]["InstanceId"]
    cleanup_run, state = client.run_dag("effopt_spot_cleanup", conf={
        "min_age_minutes": 0, "aws_conn_id": conf["aws_conn_id"], "dag_ids": [DAG]})
    client.request("PATCH", "/api/v2/dags/effopt_spot_cleanup", {"is_paused": True})
    assert state == "success", client.failure_report("effopt_spot_cleanup", cleanup_run)
    report = client.xcom("effopt_spot_cleanup", cleanup_run, "cleanup")
    assert report["terminated"] == [orphan] and "no longer exists" in report["orphans"][0]["reason"]
    assert inst["instance_id"] in [k["instance_id"] for k in report["kept_instances"]]
    state_of = {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances(
        InstanceIds=[orphan, inst["instance_id"]])["Reservations"] for i in r["Instances"]}
    assert state_of == {orphan: "terminated", inst["instance_id"]: "running"}

    # -- an interruption notice: checkpoint, relaunch elsewhere ------------------------------------------------
    sqs.send_message(QueueUrl=queue, MessageBody=_event("interruption", inst["instance_id"],
                                                        **{"instance-action": "terminate"}))
    assert _wait_state(client, DAG, run_id, "watch_again", {"deferred"}) == "deferred"
    notice = client.xcom(DAG, run_id, "watch")
    assert notice["status"] == "interruption" and notice["notice"]["instance_id"] == inst["instance_id"]
    assert notice["exclude"] == [[inst["instance_type"], inst["az_id"]]]
    replace = client.xcom(DAG, run_id, "replace")
    assert replace["excluded"] == notice["exclude"]
    assert [inst["instance_type"], inst["az_id"]] not in [[p["instance_type"], p["az_id"]] for p in replace["pools"]]
    assert replace["job"]["hours"] <= 1  # what was left after the last checkpoint
    (again,) = client.xcom(DAG, run_id, "relaunch")["instances"]
    assert again["offering"] != inst["offering"] and again["az_id"] != inst["az_id"]
    moved = ec2.describe_instances(InstanceIds=[again["instance_id"]])["Reservations"][0]["Instances"][0]
    assert moved["Placement"]["AvailabilityZone"] == again["zone"] != inst["zone"]
    # The relaunched job ends (its instance shuts down): the watch ends, the teardown releases everything.
    sqs.send_message(QueueUrl=queue, MessageBody=_event("state", again["instance_id"], state="terminated"))
    assert client.wait_for_run(DAG, run_id, timeout=240) == "success", client.failure_report(DAG, run_id)
    states = client.task_states(DAG, run_id)
    assert states["watch_again"] == "skipped" and states["cleanup"] == "success"
    assert {t: states[t] for t in ("place", "fleet", "work", "watch", "checkpoint", "replace", "relaunch",
                                   "resume")} == dict.fromkeys(("place", "fleet", "work", "watch", "checkpoint",
                                                                "replace", "relaunch", "resume"), "success")
    mine = ec2.describe_instances(Filters=[{"Name": "tag:effopt:run", "Values": [run_id]}])["Reservations"]
    assert {i["InstanceId"]: i["State"]["Name"] for r in mine for i in r["Instances"]} == {
        inst["instance_id"]: "terminated", again["instance_id"]: "terminated"}
    assert sorted(client.xcom(DAG, run_id, "cleanup")["terminated"]) == sorted([inst["instance_id"],
                                                                                 again["instance_id"]])

    # -- the effopt page: decisions, fleets and their cost, the interruption; login required --------------------
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(airflow.url + "/effopt/api/spot", timeout=30)
    assert denied.value.code == 401
    spot = client.get("/effopt/api/spot")
    decided = {(d["task_id"], d["run_id"]) for d in spot["decisions"]}
    assert {("place", run_id), ("replace", run_id)} <= decided
    fleets = {f["task_id"]: f for f in spot["fleets"] if f["run_id"] == run_id}
    assert set(fleets) == {"fleet", "relaunch"} and all(f["running"] == 0 for f in fleets.values())
    assert all(f["cost_so_far"] >= 0 and f["unpriced"] == 0 for f in fleets.values())
    assert spot["counts"]["interruption"] >= 1 and spot["counts"]["orphans_terminated"] >= 1
    assert any(e["kind"] == "interruption" and inst["instance_id"] in e["text"] for e in spot["events"])
    page = client.request("GET", "/effopt/")
    assert "Spot placement" in page and "relaunch excludes" in page and inst["instance_id"] in page

    # -- the credentials never show ------------------------------------------------------------------------------
    seen = [json.dumps(spot), page]
    for dag_id, rid in ((DAG, run_id), ("effopt_spot_cleanup", cleanup_run)):
        for ti in client.task_instances(dag_id, rid):
            if ti["try_number"]:
                seen.append(client.task_log(dag_id, rid, ti["task_id"], ti["try_number"]))
            entries = client.get(f"/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances/{ti['task_id']}/xcomEntries")
            for entry in entries["xcom_entries"]:
                seen.append(json.dumps(client.xcom(dag_id, rid, ti["task_id"], entry["key"])))
    assert len(seen) > 12 and all(secret not in text for text in seen)
