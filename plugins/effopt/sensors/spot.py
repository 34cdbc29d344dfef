"""Waits for a spot interruption notice or a rebalance recommendation: from SQS in the triggerer (no worker slot
held), or from the instance metadata service in the task itself, which must run on the watched instance."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

from effopt.operators.errors import fail_fast
from effopt.spot.interruptions import DEFAULT_IMDS, KINDS

SOURCES = ("auto", "imds", "sqs")


def watched_instances(instances: Any) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(instance ids, their offerings by id) from a :class:`~effopt.operators.spot.SpotFleetOperator` XCom, a
    list of such XComs, a list of ids, or a comma-separated string."""
    ids: list[str] = []
    offerings: dict[str, dict[str, Any]] = {}
    items: list[Any]
    if instances in (None, ""):
        items = []
    elif isinstance(instances, str):
        items = [i.strip() for i in instances.split(",") if i.strip()]
    elif isinstance(instances, Mapping):
        items = [instances]
    else:
        items = list(instances)
    for item in items:
        if isinstance(item, Mapping) and "instances" in item:
            for inst in item["instances"]:
                ids.append(inst["instance_id"])
                offerings[inst["instance_id"]] = dict(inst)
        elif isinstance(item, Mapping) and "instance_id" in item:
            ids.append(str(item["instance_id"]))
            offerings[str(item["instance_id"])] = dict(item)
        elif isinstance(item, str):
            ids.append(item)
        else:
            raise ValueError(f"instances: {item!r} is neither a fleet XCom nor an instance id")
    return list(dict.fromkeys(ids)), offerings


class SpotInterruptionSensor(BaseSensorOperator):
    """Done when an interruption notice (or a rebalance recommendation) comes for the watched instances.

    :param source: ``sqs`` (an SQS queue fed by an EventBridge rule for ``EC2 Spot Instance Interruption
        Warning``, ``EC2 Instance Rebalance Recommendation`` and ``EC2 Instance State-change Notification``;
        read through ``aws_conn_id``), ``imds`` (the metadata service of the instance this task runs on) or
        ``auto`` (``sqs`` when ``queue_url`` is set, else ``imds``).  With ``imds`` the sensor never defers: it
        polls in its own task (poke mode), because the metadata service answers for the machine that asks, and
        a triggerer runs elsewhere; the task must run ON the spot instance (a worker or queue on it)
    :param instances: what to watch: a fleet XCom (``fleet.output``), or instance ids
    :param events: ``interruption`` and/or ``rebalance``
    :param poll_interval_s: default ``[effopt] spot_interruption_poll_s`` (5 s)
    :param wait_s: how long the wait lasts (default the sensor's ``timeout``)
    :param deferrable: with ``sqs``, wait in the triggerer (:class:`~effopt.triggers.spot.SpotInterruptionTrigger`,
        default); ``imds`` always polls in the task

    Returns (XCom) ``{"status": "interruption" | "rebalance", "notice": ..., "offering": ..., "exclude":
    [[instance type, AZ ID]], "at": ...}``: give it to :class:`~effopt.operators.spot.SpotPlacementOperator`'s
    ``exclude`` to relaunch elsewhere.  The interrupted offering is also marked unavailable for every fleet
    (``[effopt] spot_unavailable_minutes``).  When the watched instances finish without a notice, or the wait
    ends (``soft_fail=True``), the task is skipped, and so is the relaunch after it; without ``soft_fail`` the
    end of the wait is an :class:`AirflowSensorTimeout` (failed, not retried: a retry would only wait again).
    """

    template_fields: Sequence[str] = ("source", "instances", "queue_url", "aws_conn_id", "imds_url", "events",
                                      "poll_interval_s", "wait_s")

    def __init__(self, *, source: str = "auto", instances: Any = None, queue_url: str = "", aws_conn_id: str = "",
                 imds_url: str = DEFAULT_IMDS, events: Any = KINDS, poll_interval_s: Any = None, wait_s: Any = None,
                 deferrable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.instances = instances
        self.queue_url = queue_url
        self.aws_conn_id = aws_conn_id
        self.imds_url = imds_url
        self.events = events
        self.poll_interval_s = poll_interval_s
        self.wait_s = wait_s
        self.deferrable = deferrable
        self._trigger: Any = None

    def _kinds(self) -> list[str]:
        kinds = [self.events] if isinstance(self.events, str) else list(self.events or ())
        kinds = [k.strip() for part in kinds for k in str(part).split(",") if k.strip()]
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise ValueError(f"events {self.events!r}: use interruption and/or rebalance")
        return kinds

    def _make_trigger(self) -> Any:
        from effopt.airflow_settings import get_settings
        from effopt.operators.spot import aws_conn_id, require_aws
        from effopt.triggers.spot import SpotInterruptionTrigger

        source = self.source
        if source not in SOURCES:
            raise ValueError(f"source {source!r}: use one of {', '.join(SOURCES)}")
        if source == "auto":
            source = "sqs" if self.queue_url else "imds"
        ids, self._offerings = watched_instances(self.instances)
        conn_id = aws_conn_id(self.aws_conn_id)
        if source == "sqs":
            if not self.queue_url:
                raise AirflowSkipException(
                    "nothing to watch: name the SQS queue (queue_url) that an EventBridge rule feeds with the EC2 "
                    "Spot Instance Interruption Warning, Rebalance Recommendation and State-change events")
            require_aws(conn_id, "no interruption watch")
            if not ids:
                raise AirflowSkipException("no instance to watch (the fleet launched none)")
        wait_s = float(self.wait_s) if self.wait_s not in (None, "") else float(self.timeout)
        poll_s = float(self.poll_interval_s) if self.poll_interval_s not in (None, "") else \
            get_settings().spot_interruption_poll_s
        if not (wait_s > 0 and poll_s > 0):
            raise ValueError(f"wait_s ({self.wait_s!r}) and poll_interval_s ({self.poll_interval_s!r}) must be > 0")
        self._wait_s, self._poll_s = wait_s, poll_s
        return SpotInterruptionTrigger(source, instance_ids=ids, queue_url=str(self.queue_url or ""),
                                       aws_conn_id=conn_id, imds_url=str(self.imds_url), kinds=self._kinds(),
                                       poll_interval_s=poll_s, timeout_at=time.time() + wait_s)

    @fail_fast
    def execute(self, context: Any) -> Any:
        trigger = self._make_trigger()
        what = ", ".join(trigger.instance_ids) or "this instance"
        if not self.deferrable or trigger.source == "imds":
            if trigger.source == "imds":
                self.log.info("polling the instance metadata service at %s in this task (imds never defers: the "
                              "triggerer's machine is not the spot instance) up to %.0f s, every %.0f s",
                              trigger.imds_url, self._wait_s, self._poll_s)
            self._trigger = trigger
            self.timeout, self.poke_interval = self._wait_s, self._poll_s
            return super().execute(context)
        self.log.info("waiting in the triggerer up to %.0f s for a %s of %s (%s, every %.0f s)", self._wait_s,
                      " or ".join(trigger.kinds), what, trigger.source, self._poll_s)
        self.defer(trigger=trigger, method_name="execute_complete")
        return None

    def poke(self, context: Any) -> Any:
        from airflow.sdk.bases.sensor import PokeReturnValue

        from effopt.spot.interruptions import Imds

        trigger = self._trigger
        identity: dict[str, Any] = getattr(self, "_identity", {})
        self._identity = identity
        imds = getattr(self, "_imds", None) or (Imds(trigger.imds_url) if trigger.source == "imds" else None)
        self._imds = imds
        for notice in trigger._poll(imds, identity):
            if notice.kind in trigger.kinds:
                event = {"status": notice.kind, "notice": notice.as_dict(), "identity": identity, "at": time.time()}
                return PokeReturnValue(is_done=True, xcom_value=self._done(context, event))
        return PokeReturnValue(is_done=False)

    def _done(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        from effopt.airflow_settings import get_settings, get_store
        from effopt.operators.spot import owner_of

        notice = event["notice"]
        identity = event.get("identity") or {}
        if not hasattr(self, "_offerings"):
            _, self._offerings = watched_instances(self.instances)
        instance_id = notice.get("instance_id") or identity.get("instance_id")
        offering = dict(self._offerings.get(instance_id or "", {}))
        if not offering and identity.get("instance_type"):
            offering = {"instance_id": instance_id, "instance_type": identity["instance_type"],
                        "az_id": identity.get("az_id"), "region": identity.get("region"), "zone": identity.get("zone"),
                        "capacity": "spot"}
        exclude = [[offering["instance_type"], offering["az_id"]]] if offering.get("az_id") else []
        now = time.time()
        store = get_store()
        owner = owner_of(context)
        minutes = get_settings().spot_unavailable_minutes
        if offering.get("instance_type") and offering.get("region") and minutes > 0:
            from effopt.spot.fleet import FleetOffering

            key = FleetOffering(offering["instance_type"], offering["region"], offering.get("az_id"), "spot").key
            store.mark_offering_unavailable(key, now + minutes * 60, f"{event['status']} notice", now)
        detail = {"notice": notice, "offering": offering, "exclude": exclude, "polls": event.get("polls")}
        store.record_spot_event(now, event["status"], owner.as_dict(), detail)
        self.log.warning("%s notice for %s (%s %s, action %s at %s): relaunch elsewhere (exclude %s)", event["status"],
                         instance_id, offering.get("instance_type"), offering.get("zone") or offering.get("az_id"),
                         notice.get("action"), notice.get("time"), exclude)
        return {"status": event["status"], "notice": notice, "offering": offering, "exclude": exclude,
                "at": event.get("at") or now, "polls": event.get("polls")}

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        status = event.get("status")
        if status in KINDS:
            return self._done(context, event)
        if status == "finished":
            raise AirflowSkipException(f"the watched instances finished ({', '.join(event.get('instances', []))}) "
                                       "with no interruption notice: nothing to relaunch")
        message = "no interruption notice in this wait"
        if self.soft_fail:
            raise AirflowSkipException(message)
        raise AirflowSensorTimeout(message)
