"""Waits until a GPU request fits the inventory minus the live leases, without holding a worker slot."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, AirflowSkipException

from effopt.operators.gpu import check_gpu_policy, lease_request


class GpuCapacitySensor(BaseSensorOperator):
    """Done when ``gpus`` GPUs (``gpu_milli`` thousandths of one, ``models``, ``gpu_memory_gib``) could be leased
    now; returns where (XCom ``{"node", "gpus"}``). Nothing is leased: a GPU task downstream leases for itself.

    :param deferrable: wait in the triggerer (:class:`~effopt.triggers.gpu.GpuCapacityTrigger`, default) or poke
    :param poll_interval_s: how often to check (default ``[effopt] gpu_capacity_poll_s``)

    A request that can never fit (an unknown model, more GPUs than any node has) fails at once, naming why.
    With no GPUs in the inventory there is nothing to wait for: done at once, saying so.
    """

    template_fields: Sequence[str] = ("poll_interval_s",)

    def __init__(self, *, gpus: int = 1, gpu_milli: int | None = None, gpu_memory_gib: float | None = None,
                 models: Iterable[str] | str | None = None, gpu_policy: str | None = None,
                 poll_interval_s: Any = None, deferrable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.request = lease_request(gpus, gpu_milli, gpu_memory_gib, models)
        self.gpu_policy = check_gpu_policy(gpu_policy)
        self.poll_interval_s = poll_interval_s
        self.deferrable = deferrable

    def _poll_s(self) -> float:
        from effopt.airflow_settings import get_settings

        value = float(self.poll_interval_s) if self.poll_interval_s not in (None, "") else \
            get_settings().gpu_capacity_poll_s
        if not value > 0:
            raise ValueError(f"poll_interval_s must be > 0, got {self.poll_interval_s!r}")
        return value

    def _check(self) -> dict[str, Any]:
        from effopt.triggers.gpu import where_it_fits

        found = where_it_fits(self.request.to_dict(), self.gpu_policy)
        if "error" in found:
            raise AirflowFailException(f"effopt: {self.request.describe()} can never be placed: {found['error']}")
        return found

    def execute(self, context: Any) -> Any:
        found = self._check()
        if found.get("fits"):
            return self._done(found)
        poll = self._poll_s()
        if not self.deferrable:
            self.poke_interval = poll
            return super().execute(context)
        from effopt.triggers.gpu import GpuCapacityTrigger

        self.log.info("effopt: %s does not fit now (%s); waiting in the triggerer, checking every %.0f s",
                      self.request.describe(), found.get("reason"), poll)
        self.defer(trigger=GpuCapacityTrigger(self.request.to_dict(), self.gpu_policy, poll,
                                              time.time() + float(self.timeout)),
                   method_name="execute_complete")
        return None

    def poke(self, context: Any) -> Any:
        from airflow.sdk.bases.sensor import PokeReturnValue

        found = self._check()
        return PokeReturnValue(is_done=bool(found.get("fits")),
                               xcom_value={"node": found.get("node", ""), "gpus": found.get("gpus", [])})

    def _done(self, found: dict[str, Any]) -> dict[str, Any]:
        if found.get("reason"):
            self.log.info("effopt: %s", found["reason"])
        else:
            self.log.info("effopt: %s fits now on node %s, GPUs %s", self.request.describe(), found["node"],
                          found["gpus"])
        return {"node": found.get("node", ""), "gpus": found.get("gpus", [])}

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        status = event.get("status")
        if status == "fits":
            return self._done(event)
        if status == "error":
            raise AirflowFailException(f"effopt: {self.request.describe()} can never be placed: {event.get('reason')}")
        message = f"no GPU capacity for {self.request.describe()} within {self.timeout:.0f} s"
        if self.soft_fail:
            raise AirflowSkipException(message)
        raise AirflowSensorTimeout(message)  # the wait asked for is over: failed, not retried
