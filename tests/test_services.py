"""The real services of the test harness answer as the later capabilities will use them."""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage

import pytest


def test_redis_server_round_trip(redis_server):
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.set("effopt:probe", b"\x00\x01payload", px=60_000)
    assert client.get("effopt:probe") == b"\x00\x01payload"


def test_redis_instance_can_go_down_and_come_back(redis_instance):
    import redis

    client = redis.Redis.from_url(redis_instance.url, socket_timeout=1)
    client.set("k", "v")
    redis_instance.stop()
    with pytest.raises(redis.exceptions.ConnectionError):
        client.get("k")
    redis_instance.start()
    assert client.ping() is True  # same URL, fresh (non-persistent) server
    assert client.get("k") is None


def test_prometheus_serves_days_of_loaded_history(prometheus_factory):
    now = int(time.time())
    start = now - 3 * 86400
    lines = ["# TYPE container_memory_working_set_bytes gauge"]
    for i, ts in enumerate(range(start, now - 600, 300)):
        lines.append('container_memory_working_set_bytes{namespace="ml",pod="trainer-0",container="main"} '
                     f'{1000 + i} {ts}')
    prom = prometheus_factory("\n".join(lines))
    oldest = prom.query('container_memory_working_set_bytes{pod="trainer-0"}', at=start + 1)
    assert [float(r["value"][1]) for r in oldest] == [1000.0]
    count = prom.query(f'count_over_time(container_memory_working_set_bytes{{pod="trainer-0"}}[{3 * 86400}s])',
                       at=now - 601)
    assert float(count[0]["value"][1]) == len(lines) - 1


def test_smtp_server_keeps_messages_and_can_refuse(smtp_server):
    msg = EmailMessage()
    msg["Subject"] = "probe"
    msg["From"] = "effopt@localhost"
    msg["To"] = "team@example.com"
    msg.set_content("hello")
    with smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10) as s:
        s.send_message(msg)
    (got,) = smtp_server.messages
    assert got["Subject"] == "probe" and got["X-Envelope-To"] == "team@example.com"
    assert got.get_content().strip() == "hello"

    smtp_server.fail_with = "451 4.3.0 try again later"
    with smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10) as s, pytest.raises(smtplib.SMTPDataError):
        s.send_message(msg)
    assert len(smtp_server.messages) == 1


def test_moto_ec2_through_the_amazon_provider_hook(aws_env):
    from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook

    ec2 = EC2Hook(aws_conn_id="aws_default", api_type="client_type").conn
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]]
    assert "us-east-1a" in zones
    types = ec2.describe_instance_types(InstanceTypes=["g5.xlarge"])["InstanceTypes"]
    assert types[0]["GpuInfo"]["Gpus"][0]["Count"] == 1
