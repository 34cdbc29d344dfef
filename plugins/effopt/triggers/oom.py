"""Waits in the triggerer for a container to be OOM-killed (kube-state-metrics in Prometheus)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


def find_kills(prometheus_conn_id: str, selector: str, since: float) -> list[dict[str, Any]]:
    """OOM kills after ``since`` through the connection (blocking: the trigger runs it in a thread)."""
    from effopt.hooks.prometheus import PrometheusHook
    from effopt.metrics.prometheus import oom_kills_since

    now = time.time()
    source = PrometheusHook(prometheus_conn_id).get_source(start=since - 60.0, end=now, selector=selector)
    return oom_kills_since(source, since)


class OomKillTrigger(BaseTrigger):
    """Polls Prometheus every ``poll_interval_s`` for containers OOM-killed after ``since``.

    Fires ``{"status": "oom", "kills": [...]}`` (namespace, pod, workload, container, killed_at), or
    ``{"status": "timeout"}`` at ``timeout_at``.  A Prometheus that cannot be reached is retried at the next
    poll and reported in the triggerer's log; it never ends the wait.
    """

    def __init__(self, prometheus_conn_id: str, selector: str, since: float, poll_interval_s: float = 30.0,
                 timeout_at: float | None = None) -> None:
        super().__init__()
        self.prometheus_conn_id = prometheus_conn_id
        self.selector = selector
        self.since = float(since)
        self.poll_interval_s = float(poll_interval_s)
        self.timeout_at = timeout_at

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("effopt.triggers.oom.OomKillTrigger", {
            "prometheus_conn_id": self.prometheus_conn_id, "selector": self.selector, "since": self.since,
            "poll_interval_s": self.poll_interval_s, "timeout_at": self.timeout_at})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            try:
                kills = await asyncio.to_thread(find_kills, self.prometheus_conn_id, self.selector, self.since)
            except Exception as exc:  # noqa: BLE001 - an outage is reported and the wait goes on
                self.log.warning("effopt: OOM watch could not query Prometheus (%s: %s); trying again in %.0f s",
                                 type(exc).__name__, exc, self.poll_interval_s)
                kills = []
            if kills:
                yield TriggerEvent({"status": "oom", "kills": kills})
                return
            if self.timeout_at is not None and time.time() >= self.timeout_at:
                yield TriggerEvent({"status": "timeout"})
                return
            await asyncio.sleep(self.poll_interval_s)
