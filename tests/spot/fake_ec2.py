"""A small fake EC2 client at the boto boundary, for what moto cannot show.

moto's CreateFleet ignores ``ClientToken`` (the same token makes two fleets),
never returns ``Errors[]`` and has no capacity limits or interruptions.  This
fake implements the few calls :mod:`effopt.spot.fleet` and
:mod:`effopt.spot.cleanup` make, with EC2's documented behaviour where it
matters here:

* ``create_fleet`` (type ``instant``): the same ``ClientToken`` with the same
  parameters returns the first response and launches nothing; with other
  parameters it raises ``IdempotentParameterMismatch``.  Capacity is per
  (instance type, AZ ID, lifecycle) in :attr:`FakeEc2.capacity` (missing:
  ``default_capacity``); overrides are filled in their order, and an override
  that gets nothing is named in ``Errors[]`` with its ``error_codes`` entry or
  ``InsufficientInstanceCapacity``.  Instances get the ``instance`` tags of
  ``TagSpecifications``;
* ``describe_instances`` (``tag:``, ``instance-state-name`` and
  ``instance-id`` filters, ``InstanceIds``; pages of 5 with ``NextToken``),
  ``terminate_instances`` (an unknown id fails the whole call with
  ``InvalidInstanceID.NotFound``), ``describe_availability_zones`` and
  ``describe_subnets`` (us-east-1's zones as moto names them).

Errors are botocore's own (``ClientError``, ``ReadTimeoutError``).  Faults are
injected per call by :attr:`FakeEc2.fault` (``fault(operation) -> None |
"throttle" | "timeout_before" | "timeout_after" | "crash_before" |
"crash_after"``); a crash kills the :class:`FakeClient` it happened in (every
later call on it raises :class:`Crash`, as a dead process makes no call), the
shared state of EC2 stays.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError, ReadTimeoutError

ZONES = {"use1-az6": "us-east-1a", "use1-az1": "us-east-1b", "use1-az2": "us-east-1c", "use1-az4": "us-east-1d",
         "use1-az3": "us-east-1e", "use1-az5": "us-east-1f"}
NAMES = {v: k for k, v in ZONES.items()}
SUBNETS = {az: f"subnet-{i:08x}" for i, az in enumerate(sorted(ZONES), start=1)}


class Crash(BaseException):
    """The process running the client died here (like SIGKILL: no handler of its own runs)."""


class _Meta:
    region_name = "us-east-1"


def client_error(code: str, operation: str, message: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message or code}}, operation)


class FakeEc2:
    """EC2's shared state; :meth:`client` gives a client (one per simulated process)."""

    def __init__(self, *, default_capacity: dict[str, int] | None = None) -> None:
        self.capacity: dict[tuple[str, str, str], int] = {}
        self.default_capacity = default_capacity or {"spot": 0, "on-demand": 1000}
        self.error_codes: dict[tuple[str, str, str], str] = {}
        self.instances: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, tuple[str, dict[str, Any]]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fault: Callable[[str], str | None] = lambda operation: None
        self.clock = 1_800_000_000.0
        self._ids = itertools.count(1)
        self.fleets = 0

    def client(self) -> FakeClient:
        return FakeClient(self)

    # -- views ----------------------------------------------------------------------------------------------
    def live(self) -> dict[str, dict[str, Any]]:
        return {i: inst for i, inst in self.instances.items() if inst["State"]["Name"] not in ("terminated",
                                                                                                "shutting-down")}

    def tags(self, instance_id: str) -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in self.instances[instance_id]["Tags"]}

    # -- calls ----------------------------------------------------------------------------------------------
    def create_fleet(self, **req: Any) -> dict[str, Any]:
        token = req.get("ClientToken")
        if not token or len(token) > 64 or not token.isascii():
            raise client_error("InvalidParameterValue", "CreateFleet", f"ClientToken {token!r}")
        if req.get("Type") != "instant":
            raise client_error("InvalidParameterValue", "CreateFleet", "this fake only makes instant fleets")
        fingerprint = json.dumps({k: v for k, v in req.items() if k != "ClientToken"}, sort_keys=True)
        if token in self.tokens:
            first, response = self.tokens[token]
            if first != fingerprint:
                raise client_error("IdempotentParameterMismatch", "CreateFleet",
                                   "the same client token was used with different parameters")
            return copy.deepcopy(response)
        target = req["TargetCapacitySpecification"]
        lifecycle = target["DefaultTargetCapacityType"]
        remaining = int(target["TotalTargetCapacity"])
        tags = [t for spec in req.get("TagSpecifications") or [] if spec["ResourceType"] == "instance"
                for t in spec["Tags"]]
        self.fleets += 1
        fleet_id = f"fleet-{self.fleets:08x}"
        instances, errors = [], []
        for config in req["LaunchTemplateConfigs"]:
            for override in config["Overrides"]:
                itype = override["InstanceType"]
                if "SubnetId" in override:
                    az_id = next(a for a, s in SUBNETS.items() if s == override["SubnetId"])
                elif "AvailabilityZone" in override:
                    az_id = NAMES[override["AvailabilityZone"]]
                else:
                    az_id = "use1-az1"
                key = (itype, az_id, lifecycle)
                if remaining <= 0:
                    continue
                forced = self.error_codes.get(key)
                available = self.capacity.get(key, self.default_capacity[lifecycle])
                got = 0 if forced else min(available, remaining)
                if got:
                    self.capacity[key] = available - got
                    ids = [self._launch(itype, az_id, lifecycle, tags) for _ in range(got)]
                    instances.append({"LaunchTemplateAndOverrides": {
                        "LaunchTemplateSpecification": config["LaunchTemplateSpecification"],
                        "Overrides": dict(override)}, "Lifecycle": lifecycle, "InstanceIds": ids,
                        "InstanceType": itype})
                    remaining -= got
                if got < remaining + got or forced:  # it could not fill what was left: EC2 names it
                    errors.append({"LaunchTemplateAndOverrides": {
                        "LaunchTemplateSpecification": config["LaunchTemplateSpecification"],
                        "Overrides": dict(override)}, "Lifecycle": lifecycle,
                        "ErrorCode": forced or "InsufficientInstanceCapacity",
                        "ErrorMessage": f"no {lifecycle} capacity for {itype} in {ZONES[az_id]}"})
        response = {"FleetId": fleet_id, "Errors": errors, "Instances": instances}
        self.tokens[token] = (fingerprint, copy.deepcopy(response))
        return response

    def _launch(self, itype: str, az_id: str, lifecycle: str, tags: list[dict[str, str]]) -> str:
        instance_id = f"i-{next(self._ids):017x}"
        inst = {"InstanceId": instance_id, "InstanceType": itype, "State": {"Name": "running"},
                "Placement": {"AvailabilityZone": ZONES[az_id], "AvailabilityZoneId": az_id},
                "Tags": [dict(t) for t in tags], "LaunchTime": self.clock}
        if lifecycle == "spot":
            inst["InstanceLifecycle"] = "spot"
        self.instances[instance_id] = inst
        return instance_id

    def _matches(self, inst: dict[str, Any], filters: list[dict[str, Any]]) -> bool:
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        for f in filters:
            name, values = f["Name"], f["Values"]
            if name.startswith("tag:"):
                if tags.get(name[4:]) not in values:
                    return False
            elif name == "instance-state-name":
                if inst["State"]["Name"] not in values:
                    return False
            elif name == "instance-id":
                if inst["InstanceId"] not in values:
                    return False
            else:
                raise client_error("InvalidParameterValue", "DescribeInstances", f"filter {name}")
        return True

    def describe_instances(self, **req: Any) -> dict[str, Any]:
        ids = req.get("InstanceIds") or []
        unknown = [i for i in ids if i not in self.instances]
        if unknown:
            raise client_error("InvalidInstanceID.NotFound", "DescribeInstances", f"{unknown}")
        found = [copy.deepcopy(inst) for i, inst in self.instances.items()
                 if (not ids or i in ids) and self._matches(inst, req.get("Filters") or [])]
        start = int(req.get("NextToken") or 0)
        page = found[start:start + 5]
        out: dict[str, Any] = {"Reservations": [{"Instances": page}] if page else []}
        if start + 5 < len(found):
            out["NextToken"] = str(start + 5)
        return out

    def terminate_instances(self, **req: Any) -> dict[str, Any]:
        ids = req["InstanceIds"]
        unknown = [i for i in ids if i not in self.instances]
        if unknown:
            raise client_error("InvalidInstanceID.NotFound", "TerminateInstances",
                               f"The instance IDs '{', '.join(unknown)}' do not exist")
        changes = []
        for i in ids:
            inst = self.instances[i]
            changes.append({"InstanceId": i, "PreviousState": dict(inst["State"]),
                            "CurrentState": {"Name": "shutting-down"}})
            inst["State"] = {"Name": "terminated"}
        return {"TerminatingInstances": changes}

    def describe_availability_zones(self, **req: Any) -> dict[str, Any]:
        return {"AvailabilityZones": [{"ZoneName": name, "ZoneId": az, "RegionName": "us-east-1",
                                       "State": "available"} for az, name in sorted(ZONES.items())]}

    def describe_subnets(self, **req: Any) -> dict[str, Any]:
        wanted = req.get("SubnetIds") or list(SUBNETS.values())
        return {"Subnets": [{"SubnetId": s, "AvailabilityZoneId": az, "AvailabilityZone": ZONES[az]}
                            for az, s in SUBNETS.items() if s in wanted]}


class FakeClient:
    """One process's EC2 client: every call goes through the fault plan, a crash kills it for good."""

    meta = _Meta()
    OPERATIONS = ("create_fleet", "describe_instances", "terminate_instances", "describe_availability_zones",
                  "describe_subnets")

    def __init__(self, ec2: FakeEc2) -> None:
        self.ec2 = ec2
        self.dead = False

    def __getattr__(self, name: str) -> Any:
        if name not in self.OPERATIONS:
            raise AttributeError(name)
        handler = getattr(self.ec2, name)

        def call(**req: Any) -> Any:
            if self.dead:
                raise Crash(f"{name} from a dead process")
            self.ec2.calls.append((name, copy.deepcopy(req)))
            fault = self.ec2.fault(name)
            if fault == "throttle":
                raise client_error("RequestLimitExceeded", name, "Request limit exceeded.")
            if fault == "timeout_before":
                raise ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/")
            if fault == "crash_before":
                self.dead = True
                raise Crash(f"crash before {name}")
            result = handler(**req)
            if fault == "timeout_after":
                raise ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/")
            if fault == "crash_after":
                self.dead = True
                raise Crash(f"crash after {name}")
            return result

        return call
