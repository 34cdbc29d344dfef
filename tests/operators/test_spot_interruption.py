"""The spot interruption trigger and sensor, against a local HTTP stand-in of the instance metadata service
(IMDSv2: there is no EC2 instance here) and a real SQS queue on the moto server.

"Within one poll interval" is checked by counting polls, not by the clock: the stand-in answers 404 to the
first k requests of ``spot/instance-action`` and the notice after, and the trigger must fire at request
k + 1, the first poll after the notice appeared.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from effopt.spot.interruptions import ACTION_PATH, REBALANCE_PATH, TOKEN_PATH, Imds, parse_event
from effopt.triggers.spot import SpotInterruptionTrigger

NOTICE = {"action": "terminate", "time": "2026-12-01T10:02:00Z"}


class ImdsStandIn:
    """IMDSv2 as an instance sees it: a token from PUT /latest/api/token, required on every GET (401 without or
    with an expired one); ``spot/instance-action`` 404 for the first ``action_after`` requests, then the notice;
    ``events/recommendations/rebalance`` 404 unless ``rebalance`` is set."""

    def __init__(self, action_after: int | None = 3, rebalance: dict | None = None) -> None:
        self.action_after = action_after
        self.rebalance = rebalance
        self.requests: list[tuple[str, str, dict]] = []
        self.tokens = {"tok-1"}
        self.issued = 0
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:  # noqa: N802 - http.server's name
                standin.requests.append(("PUT", self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.path != TOKEN_PATH or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self._send(400)
                standin.issued += 1
                token = f"tok-{standin.issued}"
                standin.tokens.add(token)
                self._send(200, token)

            def do_GET(self) -> None:  # noqa: N802
                standin.requests.append(("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.headers.get("X-aws-ec2-metadata-token") not in standin.tokens:
                    return self._send(401)
                if self.path == ACTION_PATH:
                    seen = sum(1 for m, p, _ in standin.requests if p == ACTION_PATH)
                    if standin.action_after is not None and seen > standin.action_after:
                        return self._send(200, json.dumps(NOTICE))
                    return self._send(404, "Not Found")
                if self.path == REBALANCE_PATH:
                    return self._send(200, json.dumps(standin.rebalance)) if standin.rebalance else self._send(404)
                identity = {"/latest/meta-data/instance-id": "i-0abc", "/latest/meta-data/instance-type": "m5.large",
                            "/latest/meta-data/placement/availability-zone": "us-east-1b",
                            "/latest/meta-data/placement/availability-zone-id": "use1-az1",
                            "/latest/meta-data/placement/region": "us-east-1"}
                if self.path in identity:
                    return self._send(200, identity[self.path])
                self._send(404)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def gets(self, path: str) -> list[dict]:
        return [h for m, p, h in self.requests if m == "GET" and p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def imds():
    server = ImdsStandIn()
    yield server
    server.close()


def in_thread(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a fresh thread: an earlier test's Playwright session (the session-wide
    ``browser`` fixture) leaves an event loop running in the main thread, where ``asyncio.run`` is refused."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out["error"] = exc

    worker = threading.Thread(target=target)
    worker.start()
    worker.join(300)
    if "error" in out:
        raise out["error"]
    return out.get("value")


def _first(trigger):
    return in_thread(lambda: asyncio.run(anext(trigger.run())).payload)


def test_the_trigger_serializes_and_fires_at_the_first_poll_after_the_notice(imds):
    trigger = SpotInterruptionTrigger("imds", imds_url=imds.url, poll_interval_s=0.05, timeout_at=time.time() + 60)
    path, kwargs = trigger.serialize()
    assert path == "effopt.triggers.spot.SpotInterruptionTrigger" and json.loads(json.dumps(kwargs)) == kwargs
    event = _first(SpotInterruptionTrigger(**kwargs))
    assert event["status"] == "interruption"
    assert event["notice"] == {"kind": "interruption", "instance_id": "i-0abc", "source": "imds",
                               "action": "terminate", "time": NOTICE["time"], "state": None}
    assert event["identity"]["az_id"] == "use1-az1" and event["identity"]["instance_type"] == "m5.large"
    # 404, 404, 404, then the notice: the trigger fired on the 4th look, one poll after it appeared.
    assert len(imds.gets(ACTION_PATH)) == imds.action_after + 1 == event["polls"]
    # IMDSv2 all the way: one token, asked with its TTL, sent on every read.
    (put,) = [h for m, p, h in imds.requests if m == "PUT"]
    assert int(put["x-aws-ec2-metadata-token-ttl-seconds"]) > 0
    assert all(h.get("x-aws-ec2-metadata-token") == "tok-1" for m, p, h in imds.requests if m == "GET")


def test_a_rebalance_recommendation_fires_when_asked_for_and_an_expired_token_is_renewed(imds):
    imds.action_after = None
    imds.rebalance = {"noticeTime": "2026-12-01T09:50:00Z"}
    event = _first(SpotInterruptionTrigger("imds", imds_url=imds.url, poll_interval_s=0.05,
                                           timeout_at=time.time() + 60))
    assert event["status"] == "rebalance" and event["notice"]["time"] == "2026-12-01T09:50:00Z"
    client = Imds(imds.url)
    assert client.token() == "tok-2"  # the trigger had tok-1
    imds.tokens.clear()  # the session tokens expired
    assert client.get("/latest/meta-data/instance-id") == (200, "i-0abc")
    assert client._token == "tok-3"
    quiet = SpotInterruptionTrigger("imds", imds_url=imds.url, kinds=("interruption",), poll_interval_s=0.05,
                                    timeout_at=time.time() + 0.3)
    assert _first(quiet)["status"] == "timeout"  # a rebalance alone does not fire an interruption-only watch


def test_an_unreachable_metadata_service_is_retried_until_the_wait_ends():
    trigger = SpotInterruptionTrigger("imds", imds_url="http://127.0.0.1:9", poll_interval_s=0.05,
                                      timeout_at=time.time() + 0.4)
    event = _first(trigger)
    assert event["status"] == "timeout" and event["polls"] >= 2


def test_eventbridge_events_are_parsed_and_others_ignored():
    warning = {"version": "0", "detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2",
               "time": "2026-12-01T10:00:00Z", "detail": {"instance-id": "i-1", "instance-action": "terminate"}}
    assert parse_event(json.dumps(warning)).as_dict() == {
        "kind": "interruption", "instance_id": "i-1", "source": "sqs", "action": "terminate",
        "time": "2026-12-01T10:00:00Z", "state": None}
    wrapped = {"Type": "Notification", "Message": json.dumps(warning)}
    assert parse_event(json.dumps(wrapped)).instance_id == "i-1"
    state = {"detail-type": "EC2 Instance State-change Notification",
             "detail": {"instance-id": "i-1", "state": "terminated"}}
    assert parse_event(state).state == "terminated"
    assert parse_event("not json") is None and parse_event({"detail-type": "AWS API Call via CloudTrail"}) is None


# -- SQS on moto ------------------------------------------------------------------------------------------------
def _event(kind: str, instance_id: str, **detail) -> str:
    detail_type = {"interruption": "EC2 Spot Instance Interruption Warning",
                   "rebalance": "EC2 Instance Rebalance Recommendation",
                   "state": "EC2 Instance State-change Notification"}[kind]
    return json.dumps({"version": "0", "detail-type": detail_type, "source": "aws.ec2",
                       "time": "2026-12-01T10:00:00Z", "detail": {"instance-id": instance_id, **detail}})


@pytest.fixture
def queue(aws_env):
    import boto3

    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=json.loads(
        aws_env["AIRFLOW_CONN_AWS_DEFAULT"])["extra"]["endpoint_url"])
    url = sqs.create_queue(QueueName=f"effopt-spot-{time.time_ns()}")["QueueUrl"]
    return sqs, url


def test_the_sqs_trigger_fires_for_a_watched_instance_and_leaves_other_messages(queue):
    sqs, url = queue
    foreign = [_event("interruption", "i-someone-else", **{"instance-action": "stop"}),
               "a message that is no EC2 event"]
    for body in foreign:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    trigger = SpotInterruptionTrigger("sqs", instance_ids=["i-mine", "i-mine-2"], queue_url=url,
                                      aws_conn_id="aws_default", poll_interval_s=0.05, timeout_at=time.time() + 60)

    def notice_later():
        time.sleep(0.5)
        sqs.send_message(QueueUrl=url, MessageBody=_event("interruption", "i-mine", **{"instance-action": "terminate"}))

    threading.Thread(target=notice_later).start()
    event = _first(trigger)
    assert event["status"] == "interruption" and event["notice"]["instance_id"] == "i-mine"
    assert event["notice"]["action"] == "terminate"
    left = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
    assert sorted(m["Body"] for m in left) == sorted(foreign)  # for the other watchers sharing the queue


def test_the_sqs_trigger_reports_the_instances_finished_when_all_are_gone(queue):
    sqs, url = queue
    for instance_id in ("i-a", "i-b"):
        sqs.send_message(QueueUrl=url, MessageBody=_event("state", instance_id, state="terminated"))
    event = _first(SpotInterruptionTrigger("sqs", instance_ids=["i-a", "i-b"], queue_url=url,
                                           aws_conn_id="aws_default", poll_interval_s=0.05,
                                           timeout_at=time.time() + 60))
    assert event["status"] == "finished" and event["instances"] == ["i-a", "i-b"]


# -- the sensor ---------------------------------------------------------------------------------------------------
FLEET = {"instances": [{"instance_id": "i-mine", "instance_type": "t3.medium", "region": "us-east-1",
                        "az_id": "use1-az2", "zone": "us-east-1c", "capacity": "spot", "launched_at": 0.0}],
         "instance_ids": ["i-mine"]}


def _context(task_id="watch"):
    ti = SimpleNamespace(dag_id="effopt_spot_example", task_id=task_id, run_id="manual__t", map_index=-1,
                         try_number=1)
    return {"ti": ti, "run_id": "manual__t"}


def test_the_sensor_defers_and_its_event_makes_the_relaunch_exclude_the_interrupted_offering(queue):
    from airflow.sdk.exceptions import TaskDeferred

    from effopt.airflow_settings import get_store
    from effopt.operators.spot import SpotPlacementOperator
    from effopt.sensors.spot import SpotInterruptionSensor

    sqs, url = queue
    sensor = SpotInterruptionSensor(task_id="watch", source="sqs", instances=FLEET, queue_url=url, wait_s=60,
                                    poll_interval_s=0.05)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(_context())
    trigger = deferred.value.trigger
    assert deferred.value.method_name == "execute_complete"
    assert isinstance(trigger, SpotInterruptionTrigger) and trigger.instance_ids == ["i-mine"]
    assert trigger.poll_interval_s == 0.05 and trigger.aws_conn_id == "aws_default"
    sqs.send_message(QueueUrl=url, MessageBody=_event("interruption", "i-mine", **{"instance-action": "terminate"}))
    event = _first(trigger)
    out = sensor.execute_complete(_context(), event)
    assert out["exclude"] == [["t3.medium", "use1-az2"]] and out["offering"]["zone"] == "us-east-1c"
    store = get_store()
    assert "t3.medium|us-east-1|use1-az2|spot" in store.unavailable_offerings(time.time())
    (recorded,) = [e for e in store.spot_events(kinds=["interruption"]) if e["run_id"] == "manual__t"]
    assert recorded["detail"]["notice"]["instance_id"] == "i-mine"
    # The relaunch: the same job, the interrupted pool excluded.
    job = {"hours": 2, "vcpus": 2, "memory_gib": 4, "deadline_hours": 6, "regions": ["us-east-1"]}
    before = SpotPlacementOperator(task_id="place", **job).execute(_context("place"))
    assert ["t3.medium", "use1-az2"] in [[p["instance_type"], p["az_id"]] for p in before["pools"]]
    after = SpotPlacementOperator(task_id="replace", exclude=out, **job).execute(_context("replace"))
    assert ["t3.medium", "use1-az2"] not in [[p["instance_type"], p["az_id"]] for p in after["pools"]]
    assert after["capacity"] == "spot" and after["excluded"] == [["t3.medium", "use1-az2"]]


def test_the_sensor_skips_when_there_is_nothing_to_watch(monkeypatch):
    from airflow.sdk.exceptions import AirflowSkipException

    from effopt.sensors.spot import SpotInterruptionSensor

    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    with pytest.raises(AirflowSkipException, match="queue"):
        SpotInterruptionSensor(task_id="w", source="sqs", instances=FLEET).execute(_context())
    with pytest.raises(AirflowSkipException, match="AIRFLOW_CONN_AWS_DEFAULT"):
        SpotInterruptionSensor(task_id="w", source="sqs", instances=FLEET, queue_url="http://q").execute(_context())
    timeout = SpotInterruptionSensor(task_id="w", source="sqs", instances=FLEET, queue_url="http://q", soft_fail=True)
    with pytest.raises(AirflowSkipException, match="no interruption"):
        timeout.execute_complete(_context(), {"status": "timeout"})
    with pytest.raises(AirflowSkipException, match="finished"):
        timeout.execute_complete(_context(), {"status": "finished", "instances": ["i-mine"]})


def test_with_imds_the_sensor_polls_in_its_own_task_and_never_defers(imds):
    """The metadata service answers for the machine that asks: deferring would poll the triggerer's machine."""
    from effopt.sensors.spot import SpotInterruptionSensor

    imds.action_after = 1
    sensor = SpotInterruptionSensor(task_id="watch", imds_url=imds.url, poll_interval_s=0.05, wait_s=30)
    assert sensor.deferrable and sensor.source == "auto"  # the defaults: auto is imds without a queue_url
    out = in_thread(sensor.execute, _context())  # a TaskDeferred would be raised here
    assert out["status"] == "interruption" and out["notice"]["instance_id"] == "i-0abc"
    assert out["exclude"] == [["m5.large", "use1-az1"]] and len(imds.gets(ACTION_PATH)) == 2


def test_the_end_of_a_deferred_wait_is_a_sensor_timeout_not_retried():
    from airflow.sdk.exceptions import AirflowSensorTimeout

    from effopt.sensors.spot import SpotInterruptionSensor

    sensor = SpotInterruptionSensor(task_id="w", source="sqs", instances=FLEET, queue_url="http://q")
    with pytest.raises(AirflowSensorTimeout, match="no interruption"):
        sensor.execute_complete(_context(), {"status": "timeout"})


def test_old_foreign_ec2_events_are_deleted_so_they_cannot_hide_the_watched_instance_s_notice(queue):
    """More than one poll's worth (SQS_BATCHES x 10) of events about instances nobody here watches, then the
    notice: put back, they would fill every poll; older than FOREIGN_MESSAGE_MAX_AGE_S, they are deleted."""
    from effopt.triggers.spot import FOREIGN_MESSAGE_MAX_AGE_S, SQS_BATCHES, poll_sqs

    sqs, url = queue
    foreign = [_event("state", f"i-other-{n}", state="running") for n in range(SQS_BATCHES * 10 + 20)]
    for start in range(0, len(foreign), 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": body}
                                                      for i, body in enumerate(foreign[start:start + 10])])
    sqs.send_message(QueueUrl=url, MessageBody="a message that is no EC2 event")
    sqs.send_message(QueueUrl=url, MessageBody=_event("interruption", "i-mine", **{"instance-action": "terminate"}))
    # Fresh foreign events are put back: another watcher may be about to read them.
    assert poll_sqs("aws_default", url, ["i-someone"], client=sqs) == []
    assert int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
        "Attributes"]["ApproximateNumberOfMessages"]) == len(foreign) + 2
    later = time.time() + FOREIGN_MESSAGE_MAX_AGE_S + 60
    found = [n for _ in range(2) for n in poll_sqs("aws_default", url, ["i-mine"], client=sqs, now=later)]
    assert [n.instance_id for n in found] == ["i-mine"]
    left = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages") or []
    assert [m["Body"] for m in left] == ["a message that is no EC2 event"]  # not an EC2 event: not ours to judge
