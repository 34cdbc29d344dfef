"""New OOM kills from kube-state-metrics in a real Prometheus (history backfilled with promtool)."""

from __future__ import annotations

import asyncio
import json
import time

from effopt.metrics.prometheus import PrometheusSource, oom_kills_since


def _history(now: int) -> tuple[str, int]:
    """Three containers over the last hour: 'fresh' OOM-killed after ``since``, 'old' killed before it and not
    again, 'again' already OOM-killed and killed once more (the reason stays on, the restarts go up)."""
    start, since = now - 3600, now - 1800
    lines = ["# TYPE kube_pod_container_status_last_terminated_reason gauge"]
    pods = {"fresh": "fresh-5d8f9c7b6-aaaaa", "old": "old-6c7d8e9f0-bbbbb", "again": "again-0"}
    for name, pod in pods.items():
        sel = f'namespace="ml",pod="{pod}",container="main"'
        for ts in range(start, now, 15):
            on = {"fresh": ts >= since + 600, "old": ts >= start + 600, "again": True}[name]
            lines.append(f'kube_pod_container_status_last_terminated_reason{{{sel},reason="OOMKilled"}} '
                         f"{int(on)} {ts}")
    lines.append("# TYPE kube_pod_container_status_restarts_total counter")
    for name, pod in pods.items():
        sel = f'namespace="ml",pod="{pod}",container="main"'
        for ts in range(start, now, 15):
            n = {"fresh": ts >= since + 600, "old": ts >= start + 600,
                 "again": (ts >= start + 300) + (ts >= since + 900)}[name]
            lines.append(f"kube_pod_container_status_restarts_total{{{sel}}} {int(n)} {ts}")
    return "\n".join(lines), since


def test_only_kills_after_since_count(prometheus_factory):
    now = int(time.time())
    text, since = _history(now)
    prom = prometheus_factory(text)
    kills = oom_kills_since(PrometheusSource(prom.url, start=since - 60, end=now, selector='namespace="ml"'), since)
    by = {k["workload"]: k for k in kills}
    assert set(by) == {"fresh", "again"}, kills  # 'old' was killed before the watch began
    assert abs(by["fresh"]["killed_at"] - (since + 600)) <= 15 and abs(by["again"]["killed_at"] - (since + 900)) <= 15
    assert by["fresh"]["pod"] == "fresh-5d8f9c7b6-aaaaa" and by["fresh"]["container"] == "main"
    assert [k["workload"] for k in kills] == ["again", "fresh"]  # newest first
    assert oom_kills_since(PrometheusSource(prom.url, start=now - 120, end=now, selector='namespace="ml"'),
                           now - 60) == []


def test_the_trigger_serializes_and_fires_with_the_kills(prometheus_factory, monkeypatch):
    from effopt.triggers.oom import OomKillTrigger

    now = int(time.time())
    text, since = _history(now)
    prom = prometheus_factory(text)
    port = prom.url.rsplit(":", 1)[1]
    monkeypatch.setenv("AIRFLOW_CONN_E2E_PROM", json.dumps({"conn_type": "http", "host": "127.0.0.1",
                                                            "port": int(port)}))
    trigger = OomKillTrigger("e2e_prom", 'namespace="ml"', since, poll_interval_s=0.1, timeout_at=time.time() + 60)
    path, kwargs = trigger.serialize()
    assert path == "effopt.triggers.oom.OomKillTrigger" and json.loads(json.dumps(kwargs)) == kwargs
    event = asyncio.run(anext(OomKillTrigger(**kwargs).run()))
    assert event.payload["status"] == "oom"
    assert {k["workload"] for k in event.payload["kills"]} == {"fresh", "again"}
    quiet = OomKillTrigger("e2e_prom", 'namespace="ml"', now - 10, poll_interval_s=0.1, timeout_at=time.time() + 0.5)
    assert asyncio.run(anext(quiet.run())).payload == {"status": "timeout"}
