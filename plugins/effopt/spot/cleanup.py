"""The orphan rule: an effopt-launched instance whose owning task try is no longer running or handing over.

Every instance :mod:`effopt.spot.fleet` launches carries its owner's tags
(deployment, DAG, task, run, map index, try).  A cleanup looks only at the
instances tagged with its own deployment (``effopt:deployment``): another
Airflow deployment sharing the AWS account has runs this one's REST API has
never heard of, and instances without the tag (launched before it existed)
are left to whoever launched them.  Given the owner's state as Airflow reports
it (:class:`OwnerState`, read over the REST API by the Airflow layer), an
instance is **kept** while

* its DAG run is running (or queued), and
* the task instance that launched it is at the same try and is running or
  deferred (the launch is under way), or succeeded (it handed the instances
  to the run's next tasks);

otherwise it is an **orphan** (:func:`orphan_reason` says why): the run
finished or is gone, the task failed, is up for retry or was cleared, or a
later try started (a crash between the launch and the XCom leaves exactly
this: instances of a try that is over).  Instances younger than
``min_age_s`` are left alone, so a launch is never raced.  Plain Python.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from effopt.spot.errors import SpotError
from effopt.spot.fleet import (
    LIVE_STATES,
    TAG_DAG,
    TAG_DEPLOYMENT,
    TAG_MANAGED,
    Owner,
    _epoch,
    describe_instances,
    tags_of,
    terminate,
)

#: Run states in which instances may still be in use.
ACTIVE_RUN_STATES = frozenset({"running", "queued"})
#: Task-instance states of a try that is launching (same try).
LAUNCHING_STATES = frozenset({"running", "deferred", "up_for_reschedule"})


@dataclass(frozen=True)
class OwnerState:
    """What Airflow says about an owner: its run's state (None: no such run) and its task instance's state and
    current try (None: no such task instance)."""

    run_state: str | None
    ti_state: str | None = None
    ti_try: int | None = None


@dataclass(frozen=True)
class ManagedInstance:
    instance_id: str
    state: str
    owner: Owner | None
    instance_type: str | None
    zone: str | None
    launched_at: float
    lifecycle: str

    @classmethod
    def from_ec2(cls, inst: Mapping[str, Any], now: float) -> ManagedInstance:
        return cls(inst["InstanceId"], (inst.get("State") or {}).get("Name", "unknown"), Owner.from_tags(tags_of(inst)),
                   inst.get("InstanceType"), (inst.get("Placement") or {}).get("AvailabilityZone"),
                   _epoch(inst.get("LaunchTime"), now), "spot" if inst.get("InstanceLifecycle") == "spot"
                   else "on-demand")

    def as_dict(self) -> dict[str, Any]:
        return {"instance_id": self.instance_id, "state": self.state,
                "owner": None if self.owner is None else self.owner.as_dict(), "instance_type": self.instance_type,
                "zone": self.zone, "launched_at": round(self.launched_at, 3), "capacity": self.lifecycle}


def orphan_reason(inst: ManagedInstance, state: OwnerState | None, *, now: float, min_age_s: float = 0.0
                  ) -> str | None:
    """Why ``inst`` is an orphan, or None when its owner may still use it (see the module docstring)."""
    if now - inst.launched_at < min_age_s:
        return None
    owner = inst.owner
    if owner is None:
        return "tagged effopt:managed but its owner tags are missing or malformed"
    if state is None or state.run_state is None:
        return f"its DAG run {owner.dag_id} {owner.run_id} no longer exists"
    if state.run_state not in ACTIVE_RUN_STATES:
        return f"its DAG run {owner.dag_id} {owner.run_id} is {state.run_state}"
    if state.ti_state is None and state.ti_try is None:
        return f"task {owner.task_id} of the run is not found"
    if state.ti_try is not None and state.ti_try != owner.try_number:
        return (f"launched by try {owner.try_number} of {owner.task_id}; the task is at try {state.ti_try} "
                f"({state.ti_state})")
    if state.ti_state in LAUNCHING_STATES or state.ti_state == "success":
        return None
    return f"the task that launched it ({owner.task_id}, try {owner.try_number}) is {state.ti_state}"


@dataclass
class CleanupReport:
    dry_run: bool
    seen: int = 0
    kept: list[dict[str, Any]] = field(default_factory=list)
    orphans: list[dict[str, Any]] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "seen": self.seen, "kept": len(self.kept), "kept_instances": self.kept,
                "orphans": self.orphans, "terminated": self.terminated, "errors": self.errors,
                "summary": self.summary()}

    def summary(self) -> str:
        verb = "would terminate" if self.dry_run else "terminated"
        done = len(self.orphans) if self.dry_run else len(self.terminated)
        return (f"{self.seen} effopt instance(s) seen, {len(self.kept)} in use, {len(self.orphans)} orphaned, "
                f"{verb} {done}" + (f", {len(self.errors)} error(s)" if self.errors else ""))


def managed_instances(client: Any, *, deployment: str, now: float | None = None, dag_ids: Iterable[str] = (),
                      sleep: Callable[[float], None] = time.sleep) -> list[ManagedInstance]:
    """Live instances tagged ``effopt:managed=true`` and ``effopt:deployment=<deployment>`` (of ``dag_ids``
    only, when given)."""
    if not deployment:
        raise SpotError("the cleanup needs its deployment id (effopt:deployment): it never looks at another "
                        "deployment's instances")
    filters: list[dict[str, Any]] = [{"Name": f"tag:{TAG_MANAGED}", "Values": ["true"]},
                                     {"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [deployment]},
                                     {"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
    dags = list(dag_ids)
    if dags:
        filters.append({"Name": f"tag:{TAG_DAG}", "Values": dags})
    t = time.time() if now is None else now
    return [ManagedInstance.from_ec2(i, t) for i in describe_instances(client, filters=filters, sleep=sleep)]


def cleanup(client: Any, owner_state: Callable[[Owner], OwnerState], *, deployment: str, dry_run: bool = False,
            min_age_s: float = 0.0, now: float | None = None, dag_ids: Iterable[str] = (),
            sleep: Callable[[float], None] = time.sleep) -> CleanupReport:
    """Find orphans among ``deployment``'s effopt-managed instances and terminate them (none with ``dry_run``).

    ``owner_state`` is asked once per task instance (the Airflow layer reads it over the REST API); an error
    there keeps that owner's instances (never terminate on a guess) and is reported.
    """
    t = time.time() if now is None else now
    report = CleanupReport(dry_run)
    states: dict[tuple[str, str, str, int], OwnerState | BaseException] = {}
    orphan_ids: list[str] = []
    for inst in managed_instances(client, deployment=deployment, now=t, dag_ids=dag_ids, sleep=sleep):
        report.seen += 1
        state: OwnerState | None = None
        if inst.owner is not None:
            key = inst.owner.task_key
            if key not in states:
                try:
                    states[key] = owner_state(inst.owner)
                except Exception as exc:  # noqa: BLE001 - reported, instance kept
                    states[key] = exc
            got = states[key]
            if isinstance(got, BaseException):
                report.errors.append(f"{inst.instance_id}: state of {inst.owner.label()} unknown ({got}); kept")
                report.kept.append({**inst.as_dict(), "why": "owner state unknown"})
                continue
            state = got
        reason = orphan_reason(inst, state, now=t, min_age_s=min_age_s)
        if reason is None:
            report.kept.append({**inst.as_dict(), "why": "younger than the minimum age"
                                if t - inst.launched_at < min_age_s else "its owner is running or handed it over"})
            continue
        report.orphans.append({**inst.as_dict(), "reason": reason})
        orphan_ids.append(inst.instance_id)
    if orphan_ids and not dry_run:
        try:
            report.terminated = terminate(client, orphan_ids, sleep=sleep)
        except Exception as exc:  # noqa: BLE001 - reported; the next run tries again
            report.errors.append(f"terminating {len(orphan_ids)} orphan(s) failed: {exc}")
    return report
