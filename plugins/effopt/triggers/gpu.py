"""Waits in the triggerer until a GPU request can be placed (the inventory minus the live leases)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


def where_it_fits(request: dict[str, Any], policy: str | None = None) -> dict[str, Any]:
    """``{"fits": True, "node", "gpus"}``, ``{"fits": False, "reason"}`` or ``{"error": ...}`` (it can never fit:
    the inventory changed under the wait). Blocking: the trigger runs it in a thread."""
    from effopt.gpu.inventory import InventoryError
    from effopt.gpu.leases import LeaseRequest, LeaseRequestError
    from effopt.hooks.gpu import GpuHook

    hook = GpuHook()
    try:
        inventory = hook.inventory()
        if inventory.empty:
            return {"fits": True, "node": "", "gpus": [], "reason": "no GPUs in the inventory"}
        manager = hook.lease_manager(inventory, policy)
        placed = manager.fits(LeaseRequest.from_dict(request))
    except (LeaseRequestError, InventoryError) as exc:
        return {"error": str(exc)}
    if not placed:
        return {"fits": False, "reason": placed.reason}
    return {"fits": True, "node": placed.node, "gpus": list(placed.gpus)}


class GpuCapacityTrigger(BaseTrigger):
    """Checks every ``poll_interval_s`` whether ``request`` (a :class:`~effopt.gpu.leases.LeaseRequest` as a dict)
    fits now.

    Fires ``{"status": "fits", "node", "gpus"}`` (nothing is leased yet: the task leases when it resumes, and
    waits again if another task was faster), ``{"status": "error", "reason"}`` when the request can no longer fit
    the inventory at all or a configuration error makes every check fail (a rejected password, no NVIDIA driver
    for ``nvml``), or ``{"status": "timeout"}`` at ``timeout_at``. A source or backend that does not answer is
    reported in the triggerer's log and asked again at the next poll.
    """

    def __init__(self, request: dict[str, Any], policy: str | None = None, poll_interval_s: float = 10.0,
                 timeout_at: float | None = None) -> None:
        super().__init__()
        self.request = dict(request)
        self.policy = policy
        self.poll_interval_s = float(poll_interval_s)
        self.timeout_at = timeout_at

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("effopt.triggers.gpu.GpuCapacityTrigger", {
            "request": self.request, "policy": self.policy, "poll_interval_s": self.poll_interval_s,
            "timeout_at": self.timeout_at})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from effopt.operators.errors import classify

        while True:
            try:
                found = await asyncio.to_thread(where_it_fits, self.request, self.policy)
            except Exception as exc:  # noqa: BLE001 - an outage is reported and the wait goes on
                if classify(exc) == "config":  # waiting cannot mend it (a bad connection, a driverless host)
                    yield TriggerEvent({"status": "error", "reason": f"{type(exc).__name__}: {exc}"})
                    return
                self.log.warning("effopt: GPU capacity check failed (%s: %s); trying again in %.0f s",
                                 type(exc).__name__, exc, self.poll_interval_s)
                found = {"fits": False}
            if "error" in found:
                yield TriggerEvent({"status": "error", "reason": found["error"]})
                return
            if found.get("fits"):
                yield TriggerEvent({"status": "fits", "node": found.get("node", ""), "gpus": found.get("gpus", [])})
                return
            if self.timeout_at is not None and time.time() >= self.timeout_at:
                yield TriggerEvent({"status": "timeout", "reason": found.get("reason", "")})
                return
            await asyncio.sleep(self.poll_interval_s)
