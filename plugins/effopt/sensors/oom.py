"""Waits for an OOM kill, without holding a worker slot while it waits (deferrable by default)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSkipException

from effopt.operators.errors import fail_fast


class OomKillSensor(BaseSensorOperator):
    """Done when a container matching ``selector`` is OOM-killed; returns the kills (XCom).

    :param selector: PromQL label matchers, e.g. ``namespace="ml"``
    :param prometheus_conn_id: default ``[effopt] prometheus_conn_id``; when it is not defined there is
        nothing to watch, and the task is skipped at once saying what to set
    :param poll_interval_s: how often Prometheus is asked (templated)
    :param wait_s: how long the wait lasts (templated; default the sensor's ``timeout``); with
        ``soft_fail=True`` a wait that saw no kill is skipped, else it fails
    :param deferrable: wait in the triggerer (:class:`~effopt.triggers.oom.OomKillTrigger`, default) or poke
    """

    template_fields: Sequence[str] = ("selector", "prometheus_conn_id", "poll_interval_s", "wait_s")

    def __init__(self, *, selector: str = "", prometheus_conn_id: str = "", poll_interval_s: Any = 30.0,
                 wait_s: Any = None, deferrable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.selector = selector
        self.prometheus_conn_id = prometheus_conn_id
        self.poll_interval_s = poll_interval_s
        self.wait_s = wait_s
        self.deferrable = deferrable
        self._since: float | None = None

    def _conn_id(self) -> str:
        from effopt.airflow_settings import get_settings

        return self.prometheus_conn_id or get_settings().prometheus_conn_id

    @fail_fast
    def execute(self, context: Any) -> Any:
        from effopt.hooks.metrics import connection_defined
        from effopt.operators.errors import connection_env

        conn_id = self._conn_id()
        if not connection_defined(conn_id):
            raise AirflowSkipException(
                f"nothing to watch: connection {conn_id!r} (Prometheus with kube-state-metrics) is not defined; set "
                f"{connection_env(conn_id)}='http://prometheus:9090' to re-plan OOM-killed containers at once")
        self._since = time.time()
        wait_s = float(self.wait_s) if self.wait_s not in (None, "") else float(self.timeout)
        poll_s = float(self.poll_interval_s)
        if not (wait_s > 0 and poll_s > 0):
            raise ValueError(f"wait_s ({self.wait_s!r}) and poll_interval_s ({self.poll_interval_s!r}) must be > 0")
        if not self.deferrable:
            self.timeout, self.poke_interval = wait_s, poll_s
            return super().execute(context)
        from effopt.triggers.oom import OomKillTrigger

        self.log.info("waiting in the triggerer up to %.0f s for an OOM kill of %s (every %.0f s)", wait_s,
                      self.selector or "any container", poll_s)
        self.defer(trigger=OomKillTrigger(conn_id, self.selector, self._since, poll_s, self._since + wait_s),
                   method_name="execute_complete")
        return None

    def poke(self, context: Any) -> Any:
        from airflow.sdk.bases.sensor import PokeReturnValue

        from effopt.triggers.oom import find_kills

        kills = find_kills(self._conn_id(), self.selector, self._since or time.time())
        return PokeReturnValue(is_done=bool(kills), xcom_value=kills or None)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> list[dict[str, Any]]:
        if event.get("status") == "oom":
            for kill in event["kills"]:
                self.log.info("OOM kill: %(namespace)s/%(pod)s container %(container)s at %(killed_at).0f", kill)
            return event["kills"]
        message = f"no OOM kill of {self.selector or 'any container'} in this wait"
        if self.soft_fail:
            raise AirflowSkipException(message)
        raise TimeoutError(message)
