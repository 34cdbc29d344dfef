"""Spot capacity through EC2 CreateFleet (type ``instant``): asked for once, tagged with its owner, never left behind.

Plain Python over a boto3 EC2 client passed in (the Airflow layer passes
``EC2Hook(api_type="client_type").conn``):

* **one owner, one token.**  Every instance carries the tags of the task try
  that launched it (:class:`Owner`: deployment, DAG, task, run, map index,
  try) and the ``ClientToken`` of the call that made it.  The deployment
  (:func:`deployment_of`) tells two Airflow deployments sharing one AWS account
  apart: their scheduled run ids are the same, and without it one would
  terminate, or be handed by its token, the other's instances.  Tokens are
  deterministic (:func:`client_token`: a hash of the owner and the call's step), so a call
  repeated after a timeout or a throttling error returns the first result
  instead of a second fleet (EC2: same token and same parameters, the first
  result; different parameters, ``IdempotentParameterMismatch``, answered
  here by adopting what that token launched, found by its tag);
* **a launch** (:meth:`FleetLauncher.launch`) first terminates what earlier
  tries of the same task left running and adopts what this try already has,
  then asks for the missing capacity: every spot pool of the placement not
  marked unavailable in one call (EC2 picks among them by the allocation
  strategy), then, when spot is exhausted, the on-demand fallback if the task
  allows it.  An offering named in ``Errors[]`` with a capacity code
  (``InsufficientInstanceCapacity``, ``MaxSpotInstanceCountExceeded``, ...) is
  marked unavailable for a few minutes in a shared cache (as Karpenter does)
  and left out of the next call; a configuration code
  (``InvalidLaunchTemplateName...``, ``UnauthorizedOperation``, ...) fails at
  once.  A call that comes back short is topped up from the remaining
  offerings (``partial="top_up"``) or its instances are terminated and the next
  offering gets the whole count (``partial="rollback"``).  Every call removes
  at least one offering from the candidates, so a launch makes at most one
  call per offering;
* **failure** of any kind (an error, a timeout, :meth:`FleetLauncher.rollback`
  from ``on_kill``) terminates every instance the launch made or adopted, and
  what its tags say it made but the client never saw (a call that timed out
  after EC2 acted on it).  What a dead process could not terminate is left to
  :mod:`effopt.spot.cleanup`, which finds it by its owner's tags.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from effopt.spot.errors import SpotError

SPOT = "spot"
ON_DEMAND = "on-demand"
PARTIAL_MODES = ("top_up", "rollback")
SPOT_STRATEGIES = ("price-capacity-optimized", "capacity-optimized", "capacity-optimized-prioritized",
                   "lowest-price", "diversified")
DEFAULT_UNAVAILABLE_S = 180.0  # Karpenter's unavailable-offerings cache TTL

TAG_MANAGED = "effopt:managed"
TAG_DEPLOYMENT = "effopt:deployment"
TAG_DAG = "effopt:dag"
TAG_TASK = "effopt:task"
TAG_RUN = "effopt:run"
TAG_MAP_INDEX = "effopt:map-index"
TAG_TRY = "effopt:try"
TAG_TOKEN = "effopt:client-token"
LIVE_STATES = ("pending", "running", "stopping", "stopped")

#: ``Errors[].ErrorCode`` values that mean "no capacity in this offering now": mark it unavailable, try the next.
CAPACITY_ERRORS = frozenset({
    "InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity", "MaxSpotInstanceCountExceeded", "SpotMaxPriceTooLow",
    "UnfulfillableCapacity", "InsufficientFreeAddressesInSubnet", "VcpuLimitExceeded", "InstanceLimitExceeded",
    "Unsupported", "ReservationCapacityExceeded",
})
#: API errors worth the same call again (same token): throttling and the service's own trouble.
RETRY_ERRORS = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "InternalError", "InternalFailure",
    "ServiceUnavailable", "Unavailable", "RequestTimeout", "RequestTimeoutException",
})
#: Error codes (or their prefixes, ending in ".") that a retry cannot fix: the request or the account is wrong.
CONFIG_ERRORS = frozenset({
    "UnauthorizedOperation", "AuthFailure", "OptInRequired", "MissingParameter", "InvalidClientTokenId",
    "SignatureDoesNotMatch", "InvalidParameterValue", "InvalidParameterCombination", "InvalidParameter",
    "InvalidFleetConfiguration", "InvalidLaunchTemplateName.", "InvalidLaunchTemplateId.",
    "InvalidLaunchTemplateName", "InvalidLaunchTemplateId", "InvalidAMIID.", "InvalidSubnetID.",
    "InvalidSubnet", "InvalidKeyPair.", "InvalidGroup.", "InvalidInstanceType", "InvalidBlockDeviceMapping",
    "UnauthorizedOperation.", "Blocked", "PendingVerification",
})


def error_kind(code: str) -> str:
    """``capacity`` (try another offering), ``retry`` (the same call again), ``config`` (fail) or ``other``."""
    if code in CAPACITY_ERRORS:
        return "capacity"
    if code in RETRY_ERRORS:
        return "retry"
    if code in CONFIG_ERRORS or any(p.endswith(".") and code.startswith(p) for p in CONFIG_ERRORS):
        return "config"
    return "other"


class FleetError(SpotError):
    """A launch that did not get its capacity; ``transient`` says whether a later try may (the Airflow layer
    retries transient errors and fails configuration errors at once)."""

    transient = True


class FleetConfigError(FleetError):
    """The request or the account is wrong (a missing launch template, no permission): a retry cannot help."""

    transient = False


class CapacityUnavailable(FleetError):
    """No offering gave the capacity now; the unavailable marks expire, so a later try may get it."""


# -- owners and tokens ----------------------------------------------------------------------------------------
def deployment_of(deployment_id: str, store_url: str) -> str:
    """The ``effopt:deployment`` tag value: ``deployment_id`` when set, else a short stable hash (sha256, 12
    hex digits) of the deployment's effopt store URL.  Never the URL itself: it may hold a password."""
    if deployment_id.strip():
        return deployment_id.strip()
    if not store_url:
        raise SpotError("no deployment id and no store URL to derive one from: set [effopt] deployment_id")
    return hashlib.sha256(store_url.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Owner:
    """The task try that owns an instance, and the Airflow deployment it runs in (:func:`deployment_of`)."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1
    try_number: int = 1
    deployment: str = field(kw_only=True)

    def __post_init__(self) -> None:
        for name in ("dag_id", "task_id", "run_id", "deployment"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise SpotError(f"owner {name} {value!r} must be a non-empty string")
            if len(value) > 256:
                raise SpotError(f"owner {name} is {len(value)} characters; an EC2 tag value holds 256")

    @property
    def task_key(self) -> tuple[str, str, str, int]:
        """(dag, run, task, map index): the task instance, whatever the try."""
        return (self.dag_id, self.run_id, self.task_id, self.map_index)

    def label(self) -> str:
        where = f"{self.dag_id}.{self.task_id}" + (f"[{self.map_index}]" if self.map_index >= 0 else "")
        return f"{where} run {self.run_id} try {self.try_number}"

    def tags(self) -> dict[str, str]:
        return {TAG_MANAGED: "true", TAG_DEPLOYMENT: self.deployment, TAG_DAG: self.dag_id, TAG_TASK: self.task_id,
                TAG_RUN: self.run_id, TAG_MAP_INDEX: str(self.map_index), TAG_TRY: str(self.try_number)}

    def filters(self, *, same_try: bool | None = None) -> list[dict[str, Any]]:
        """``describe_instances`` filters for this task instance's live instances (any try, or this try only)."""
        out = [{"Name": f"tag:{TAG_MANAGED}", "Values": ["true"]},
               {"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [self.deployment]},
               {"Name": f"tag:{TAG_DAG}", "Values": [self.dag_id]},
               {"Name": f"tag:{TAG_TASK}", "Values": [self.task_id]},
               {"Name": f"tag:{TAG_RUN}", "Values": [self.run_id]},
               {"Name": f"tag:{TAG_MAP_INDEX}", "Values": [str(self.map_index)]},
               {"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
        if same_try:
            out.append({"Name": f"tag:{TAG_TRY}", "Values": [str(self.try_number)]})
        return out

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Owner | None:
        """The owner an instance's tags name, or None when a tag is missing or malformed."""
        try:
            return cls(tags[TAG_DAG], tags[TAG_TASK], tags[TAG_RUN], int(tags.get(TAG_MAP_INDEX, "-1")),
                       int(tags[TAG_TRY]), deployment=tags[TAG_DEPLOYMENT])
        except (KeyError, ValueError, SpotError):
            return None

    def as_dict(self) -> dict[str, Any]:
        return {"dag_id": self.dag_id, "task_id": self.task_id, "run_id": self.run_id, "map_index": self.map_index,
                "try_number": self.try_number}


def client_token(owner: Owner, step: int = 0) -> str:
    """The CreateFleet ``ClientToken`` of ``owner``'s ``step``-th call: deterministic, 55 ASCII characters."""
    payload = json.dumps([owner.deployment, owner.dag_id, owner.task_id, owner.run_id, owner.map_index,
                          owner.try_number, step], separators=(",", ":"))
    return "effopt-" + hashlib.sha256(payload.encode()).hexdigest()[:48]


def tags_of(resource: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in resource.get("Tags") or [] if "Key" in t}


# -- offerings and the unavailability cache --------------------------------------------------------------------
@dataclass(frozen=True)
class FleetOffering:
    """One (instance type, region, AZ ID, capacity type) to ask for; ``az_id`` None: any zone (on-demand)."""

    instance_type: str
    region: str
    az_id: str | None
    capacity: str
    usd_per_hour: float | None = None

    def __post_init__(self) -> None:
        if self.capacity not in (SPOT, ON_DEMAND):
            raise SpotError(f"offering capacity {self.capacity!r}: use spot or on-demand")
        if not self.instance_type or not self.region:
            raise SpotError(f"offering {self.instance_type!r} in {self.region!r} needs an instance type and a region")

    @property
    def key(self) -> str:
        return f"{self.instance_type}|{self.region}|{self.az_id or '*'}|{self.capacity}"

    def as_dict(self) -> dict[str, Any]:
        return {"instance_type": self.instance_type, "region": self.region, "az_id": self.az_id,
                "capacity": self.capacity, "usd_per_hour": self.usd_per_hour, "key": self.key}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FleetOffering:
        try:
            return cls(str(d["instance_type"]), str(d["region"]), d.get("az_id"), str(d["capacity"]),
                       None if d.get("usd_per_hour") is None else float(d["usd_per_hour"]))
        except KeyError as exc:
            raise SpotError(f"offering {dict(d)!r} lacks {exc.args[0]!r}") from None


def offerings_from_placement(placement: Mapping[str, Any], *, allow_on_demand: bool = True) -> list[FleetOffering]:
    """The offerings to launch in, in order, from a :class:`~effopt.spot.choose.Placement` ``as_dict()``:
    its spot pools, then its on-demand fallback (when allowed); an on-demand decision is its one offering."""
    if not isinstance(placement, Mapping) or "capacity" not in placement or "pools" not in placement:
        raise SpotError("placement is not a SpotPlacementOperator result (no 'capacity' and 'pools')")
    pools = [FleetOffering.from_dict(o) for o in placement["pools"]]
    fallback = placement.get("fallback")
    out = list(pools)
    if allow_on_demand and fallback:
        out.append(FleetOffering.from_dict(fallback))
    if placement["capacity"] == ON_DEMAND and not allow_on_demand:
        raise SpotError("the placement chose on-demand, and the task does not allow on-demand capacity")
    if not out:
        raise SpotError("the placement names no offering to launch in")
    return out


class UnavailableOfferings(Protocol):
    """Offerings that failed recently, shared by every task (the effopt store implements it)."""

    def unavailable_offerings(self, now: float) -> dict[str, str]: ...

    def mark_offering_unavailable(self, key: str, until: float, reason: str, now: float) -> None: ...


class MemoryUnavailable:
    """An in-process :class:`UnavailableOfferings`."""

    def __init__(self) -> None:
        self.marks: dict[str, tuple[float, str]] = {}

    def unavailable_offerings(self, now: float) -> dict[str, str]:
        return {k: why for k, (until, why) in self.marks.items() if until > now}

    def mark_offering_unavailable(self, key: str, until: float, reason: str, now: float) -> None:
        self.marks[key] = (until, reason)


# -- the request -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FleetSpec:
    """What one task asks for.

    ``launch_template``: a template name, or an id (``lt-...``); ``subnet_ids``: subnets to launch in (an
    offering uses the one in its AZ ID; without them, the zone's default subnet through ``AvailabilityZone``).
    """

    owner: Owner
    offerings: tuple[FleetOffering, ...]
    launch_template: str
    launch_template_version: str = "$Default"
    count: int = 1
    partial: str = "top_up"
    subnet_ids: tuple[str, ...] = ()
    allocation_strategy: str = "price-capacity-optimized"
    unavailable_s: float = DEFAULT_UNAVAILABLE_S
    timeout_s: float = 600.0
    call_attempts: int = 4
    extra_tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1:
            raise SpotError(f"count {self.count!r} must be a whole number >= 1")
        if self.partial not in PARTIAL_MODES:
            raise SpotError(f"partial {self.partial!r}: use {' or '.join(PARTIAL_MODES)}")
        if self.allocation_strategy not in SPOT_STRATEGIES:
            raise SpotError(f"allocation_strategy {self.allocation_strategy!r}: use one of "
                            f"{', '.join(SPOT_STRATEGIES)}")
        if not self.launch_template:
            raise SpotError("a launch template (name or lt- id) is required")
        if not self.offerings:
            raise SpotError("no offering to launch in")
        if not (self.unavailable_s >= 0 and self.timeout_s > 0 and self.call_attempts >= 1):
            raise SpotError("unavailable_s must be >= 0, timeout_s > 0 and call_attempts >= 1")
        reserved = [k for k in self.extra_tags if k.startswith("effopt:")]
        if reserved:
            raise SpotError(f"tag(s) {', '.join(reserved)}: the effopt: prefix is effopt's own")

    def template_spec(self) -> dict[str, str]:
        key = "LaunchTemplateId" if self.launch_template.startswith("lt-") else "LaunchTemplateName"
        return {key: self.launch_template, "Version": self.launch_template_version}


@dataclass(frozen=True)
class LaunchedInstance:
    instance_id: str
    offering: FleetOffering
    zone: str | None
    client_token: str
    fleet_id: str | None
    launched_at: float
    owner: Owner

    @property
    def az_id(self) -> str | None:
        return self.offering.az_id

    def as_dict(self) -> dict[str, Any]:
        return {"instance_id": self.instance_id, "instance_type": self.offering.instance_type,
                "region": self.offering.region, "az_id": self.offering.az_id, "zone": self.zone,
                "capacity": self.offering.capacity, "usd_per_hour": self.offering.usd_per_hour,
                "offering": self.offering.key, "client_token": self.client_token, "fleet_id": self.fleet_id,
                "launched_at": round(self.launched_at, 3)}


@dataclass
class FleetResult:
    owner: Owner
    instances: list[LaunchedInstance]
    calls: list[dict[str, Any]]
    marked_unavailable: list[dict[str, Any]]
    skipped_offerings: list[dict[str, str]]
    terminated_earlier: list[str]
    adopted: list[str]
    planned_capacity: str

    @property
    def fallback(self) -> bool:
        """On-demand instances although the plan was spot."""
        return self.planned_capacity == SPOT and any(i.offering.capacity == ON_DEMAND for i in self.instances)

    def as_dict(self) -> dict[str, Any]:
        caps = {SPOT: 0, ON_DEMAND: 0}
        for i in self.instances:
            caps[i.offering.capacity] += 1
        return {"owner": self.owner.as_dict(), "instances": [i.as_dict() for i in self.instances],
                "instance_ids": [i.instance_id for i in self.instances],
                "zones": {i.instance_id: i.zone for i in self.instances}, "capacity": caps,
                "fleet_ids": sorted({i.fleet_id for i in self.instances if i.fleet_id}),
                "fallback_to_on_demand": self.fallback, "calls": self.calls,
                "marked_unavailable": self.marked_unavailable, "skipped_offerings": self.skipped_offerings,
                "terminated_earlier_tries": self.terminated_earlier, "adopted": self.adopted,
                "usd_per_hour": round(sum(i.offering.usd_per_hour or 0.0 for i in self.instances), 6)}


# -- boto helpers ----------------------------------------------------------------------------------------------
def _code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError`` (duck-typed), else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        return str((response.get("Error") or {}).get("Code") or "") or None
    return None


def _network_error(exc: BaseException) -> bool:
    """A connection or read failure on the way to EC2 (the call may or may not have reached it)."""
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError
    except ImportError:  # pragma: no cover - botocore comes with the amazon provider
        return isinstance(exc, (ConnectionError, TimeoutError))
    return isinstance(exc, (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError))


def call(client: Any, operation: str, *, attempts: int = 4, sleep: Callable[[float], None] = time.sleep,
         **kwargs: Any) -> Any:
    """``client.<operation>(**kwargs)``, again after throttling, EC2's own errors or a lost connection (a read,
    or a call safe to repeat); the last failure becomes a transient :class:`FleetError`, a configuration error
    a :class:`FleetConfigError`, anything else is raised as it is."""
    for attempt in range(attempts):
        try:
            return getattr(client, operation)(**kwargs)
        except Exception as exc:  # noqa: BLE001 - classified below
            code = _code(exc)
            kind = error_kind(code) if code else ("retry" if _network_error(exc) else "other")
            if kind == "config":
                raise FleetConfigError(f"{operation}: {code}: {_message(exc)}") from None
            if kind != "retry":
                raise
            if attempt + 1 == attempts:
                raise FleetError(f"{operation} failed {attempts} time(s): {code or type(exc).__name__}: "
                                 f"{_message(exc)}") from None
            sleep(min(2.0 ** attempt, 10.0))
    raise AssertionError("unreachable")


def describe_instances(client: Any, *, filters: Sequence[Mapping[str, Any]] = (), ids: Sequence[str] = (),
                       sleep: Callable[[float], None] = time.sleep) -> list[dict[str, Any]]:
    """Every instance matching ``filters`` (or ``ids``), following ``NextToken`` (each page retried)."""
    kwargs: dict[str, Any] = {}
    if filters:
        kwargs["Filters"] = [dict(f) for f in filters]
    if ids:
        kwargs["InstanceIds"] = list(ids)
    out: list[dict[str, Any]] = []
    while True:
        resp = call(client, "describe_instances", sleep=sleep, **kwargs)
        for reservation in resp.get("Reservations") or []:
            out.extend(reservation.get("Instances") or [])
        token = resp.get("NextToken")
        if not token:
            return out
        kwargs["NextToken"] = token


def terminate(client: Any, instance_ids: Iterable[str], *, attempts: int = 4,
              sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """Terminate ``instance_ids`` (1,000 per call; terminating twice is harmless, so a lost answer is asked
    again); ids EC2 no longer knows count as gone.  Returns the ids terminated or gone; raises
    :class:`FleetError` when EC2 cannot be reached after ``attempts``."""
    ids = list(dict.fromkeys(instance_ids))
    done: list[str] = []
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        try:
            call(client, "terminate_instances", attempts=attempts, sleep=sleep, InstanceIds=chunk)
        except Exception as exc:  # noqa: BLE001 - an unknown id fails the whole call: go one by one
            if not (_code(exc) or "").startswith("InvalidInstanceID"):
                raise
            for instance_id in chunk:
                try:
                    call(client, "terminate_instances", attempts=attempts, sleep=sleep, InstanceIds=[instance_id])
                except Exception as one:  # noqa: BLE001 - an unknown id is gone
                    if not (_code(one) or "").startswith("InvalidInstanceID"):
                        raise
        done += chunk
    return done


# -- the launcher ----------------------------------------------------------------------------------------------
class FleetLauncher:
    """Launches one :class:`FleetSpec` and can take it back.

    ``on_launch(instances)`` is called with each call's new instances before anything else happens (the
    Airflow layer records them in the effopt store); ``on_event(kind, detail)`` for capacity errors,
    rollbacks and fallbacks.  ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(self, client: Any, *, unavailable: UnavailableOfferings | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 on_launch: Callable[[list[LaunchedInstance]], None] | None = None,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.unavailable = unavailable if unavailable is not None else MemoryUnavailable()
        self.clock = clock
        self.sleep = sleep
        self.on_launch = on_launch
        self.on_event = on_event
        self.log = log or (lambda message: None)
        self.launched: dict[str, LaunchedInstance] = {}
        self._spec: FleetSpec | None = None
        self._zones: dict[str, str] | None = None  # AZ ID -> zone name
        self._subnets: dict[str, str] = {}  # AZ ID -> subnet id

    # -- zones and subnets ------------------------------------------------------------------------------------
    @property
    def region(self) -> str:
        return getattr(getattr(self.client, "meta", None), "region_name", None) or "unknown"

    def zones(self) -> dict[str, str]:
        """AZ ID -> zone name of the client's region (names map to IDs differently in every account)."""
        if self._zones is None:
            resp = call(self.client, "describe_availability_zones", sleep=self.sleep, AllAvailabilityZones=False)
            self._zones = {z["ZoneId"]: z["ZoneName"] for z in resp.get("AvailabilityZones") or []
                           if z.get("ZoneId") and z.get("ZoneName")}
        return self._zones

    def _resolve_subnets(self, subnet_ids: Sequence[str]) -> None:
        if not subnet_ids or self._subnets:
            return
        resp = call(self.client, "describe_subnets", sleep=self.sleep, SubnetIds=list(subnet_ids))
        by_zone_name = {v: k for k, v in self.zones().items()}
        for s in resp.get("Subnets") or []:
            az_id = s.get("AvailabilityZoneId") or by_zone_name.get(s.get("AvailabilityZone", ""))
            if az_id and az_id not in self._subnets:
                self._subnets[az_id] = s["SubnetId"]

    def _usable(self, spec: FleetSpec) -> tuple[list[FleetOffering], list[dict[str, str]]]:
        usable, skipped = [], []
        zones = self.zones()
        self._resolve_subnets(spec.subnet_ids)
        for o in spec.offerings:
            why = None
            if o.region != self.region:
                why = f"in {o.region}, the EC2 connection is for {self.region}"
            elif o.az_id is not None and o.az_id not in zones:
                why = f"AZ ID {o.az_id} is not a zone of this account in {self.region}"
            elif spec.subnet_ids and o.az_id is not None and o.az_id not in self._subnets:
                why = f"none of the subnets is in {o.az_id}"
            if why:
                skipped.append({"offering": o.key, "reason": why})
            else:
                usable.append(o)
        return usable, skipped

    def _overrides(self, spec: FleetSpec, group: Sequence[FleetOffering]) -> list[dict[str, Any]]:
        out = []
        prioritized = spec.allocation_strategy == "capacity-optimized-prioritized" or group[0].capacity == ON_DEMAND
        for i, o in enumerate(group):
            places: list[dict[str, Any]]
            if o.az_id is None:
                places = [{"SubnetId": s} for s in self._subnets.values()] if spec.subnet_ids else [{}]
            elif spec.subnet_ids:
                places = [{"SubnetId": self._subnets[o.az_id]}]
            else:
                places = [{"AvailabilityZone": self.zones()[o.az_id]}]
            for place in places:
                override = {"InstanceType": o.instance_type, **place}
                if prioritized:
                    override["Priority"] = float(i)
                out.append(override)
        return out

    def build_request(self, spec: FleetSpec, group: Sequence[FleetOffering], count: int, token: str
                      ) -> dict[str, Any]:
        """The ``create_fleet`` arguments for ``count`` instances in ``group`` (all spot, or all on-demand)."""
        capacity = group[0].capacity
        tags = [{"Key": k, "Value": v} for k, v in {**spec.extra_tags, **spec.owner.tags(),
                                                     TAG_TOKEN: token}.items()]
        request: dict[str, Any] = {
            "Type": "instant",
            "ClientToken": token,
            "LaunchTemplateConfigs": [{"LaunchTemplateSpecification": spec.template_spec(),
                                       "Overrides": self._overrides(spec, group)}],
            "TargetCapacitySpecification": {"TotalTargetCapacity": count, "DefaultTargetCapacityType": capacity,
                                            **({"SpotTargetCapacity": count} if capacity == SPOT
                                               else {"OnDemandTargetCapacity": count})},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                                  {"ResourceType": "fleet", "Tags": tags}],
        }
        if capacity == SPOT:
            request["SpotOptions"] = {"AllocationStrategy": spec.allocation_strategy}
        else:
            request["OnDemandOptions"] = {"AllocationStrategy": "prioritized"}
        return request

    def _match(self, group: Sequence[FleetOffering], overrides: Mapping[str, Any] | None,
               instance_type: str | None) -> FleetOffering | None:
        """The offering of ``group`` an instance or an error belongs to (by type and zone or subnet)."""
        overrides = overrides or {}
        itype = overrides.get("InstanceType") or instance_type
        az_id = None
        if overrides.get("AvailabilityZone"):
            az_id = {v: k for k, v in self.zones().items()}.get(overrides["AvailabilityZone"])
        elif overrides.get("SubnetId"):
            az_id = next((a for a, s in self._subnets.items() if s == overrides["SubnetId"]), None)
        same_type = [o for o in group if o.instance_type == itype]
        exact = [o for o in same_type if o.az_id == az_id or o.az_id is None]
        if exact:
            return exact[0]
        return same_type[0] if len(same_type) == 1 else None

    # -- calls ------------------------------------------------------------------------------------------------
    def _create(self, spec: FleetSpec, request: dict[str, Any]) -> dict[str, Any] | None:
        """``create_fleet`` with the same token until it answers; None on ``IdempotentParameterMismatch``."""
        last: BaseException | None = None
        for attempt in range(spec.call_attempts):
            try:
                return self.client.create_fleet(**request)
            except Exception as exc:  # noqa: BLE001 - classified below
                code = _code(exc)
                if code == "IdempotentParameterMismatch":
                    return None
                if code is not None:
                    kind = error_kind(code)
                    if kind == "config":
                        raise FleetConfigError(f"CreateFleet refused the request: {code}: {_message(exc)}") from None
                    if kind != "retry":
                        raise FleetError(f"CreateFleet failed: {code}: {_message(exc)}") from None
                elif not _network_error(exc):
                    raise
                last = exc
                self.log(f"CreateFleet {request['ClientToken']}: {code or type(exc).__name__}; the same call again "
                         f"(attempt {attempt + 2} of {spec.call_attempts})")
                if attempt + 1 < spec.call_attempts:
                    self.sleep(min(2.0 ** attempt, 20.0))
        raise FleetError(f"CreateFleet did not answer after {spec.call_attempts} attempt(s): {last}")

    def _by_token(self, token: str) -> list[dict[str, Any]]:
        return describe_instances(self.client, filters=[{"Name": f"tag:{TAG_TOKEN}", "Values": [token]},
                                                        {"Name": "instance-state-name", "Values": list(LIVE_STATES)}],
                                  sleep=self.sleep)

    def _from_described(self, described: Sequence[Mapping[str, Any]], offerings: Sequence[FleetOffering],
                        token: str | None) -> list[LaunchedInstance]:
        by_name = {v: k for k, v in self.zones().items()}
        out = []
        for inst in described:
            if inst["InstanceId"] in self.launched:
                continue
            zone = (inst.get("Placement") or {}).get("AvailabilityZone")
            az_id = (inst.get("Placement") or {}).get("AvailabilityZoneId") or by_name.get(zone or "")
            capacity = SPOT if inst.get("InstanceLifecycle") == "spot" else ON_DEMAND
            offering = next((o for o in offerings if o.instance_type == inst.get("InstanceType")
                             and o.capacity == capacity and o.az_id in (az_id, None)), None)
            if offering is None:
                offering = FleetOffering(inst.get("InstanceType") or "unknown", self.region, az_id, capacity)
            tags = tags_of(inst)
            out.append(LaunchedInstance(inst["InstanceId"], offering, zone, token or tags.get(TAG_TOKEN, ""), None,
                                        _epoch(inst.get("LaunchTime"), self.clock()), self._spec.owner))
        return out

    def _add(self, instances: list[LaunchedInstance]) -> None:
        for i in instances:
            self.launched[i.instance_id] = i
        if instances and self.on_launch is not None:
            self.on_launch(instances)

    def _event(self, kind: str, detail: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(kind, detail)

    # -- launch -----------------------------------------------------------------------------------------------
    def launch(self, spec: FleetSpec) -> FleetResult:
        """Get ``spec.count`` instances (see the module docstring); on any failure, take them all back."""
        self._spec = spec
        started = self.clock()
        owner = spec.owner
        calls: list[dict[str, Any]] = []
        marked: list[dict[str, Any]] = []
        try:
            offerings, skipped = self._usable(spec)
            if not offerings:
                raise FleetConfigError("no offering can be launched: " + "; ".join(
                    f"{s['offering']}: {s['reason']}" for s in skipped))
            earlier, adopted = self._earlier_tries(offerings)
            failed: set[str] = set()
            step = 0
            while len(self.launched) < spec.count:
                if self.clock() - started > spec.timeout_s:
                    raise FleetError(f"launch of {spec.count} instance(s) for {owner.label()} took more than "
                                     f"{spec.timeout_s:g} s")
                blocked = self.unavailable.unavailable_offerings(self.clock())
                candidates = [o for o in offerings if o.key not in failed and o.key not in blocked]
                group = [o for o in candidates if o.capacity == SPOT] or [o for o in candidates
                                                                          if o.capacity == ON_DEMAND]
                if not group:
                    break
                remaining = spec.count - len(self.launched)
                token = client_token(owner, step)
                step += 1
                request = self.build_request(spec, group, remaining, token)
                resp = self._create(spec, request)
                call: dict[str, Any] = {"client_token": token, "capacity": group[0].capacity, "asked": remaining,
                                        "offerings": [o.key for o in group], "errors": []}
                calls.append(call)
                if resp is None:  # IdempotentParameterMismatch: this token launched before; adopt what it made
                    new = self._from_described(self._by_token(token), group, token)
                    call["adopted_by_token"] = [i.instance_id for i in new]
                    self._add(new)
                    failed.update(o.key for o in group)
                    continue
                new = self._parse_instances(resp, group, token)
                self._add(new)
                call["got"] = [i.instance_id for i in new]
                named = self._handle_errors(spec, resp, group, failed, marked, call)
                if len(new) < remaining:
                    # What a short call got is all its offerings had now: ask the others for the rest.
                    failed.update(i.offering.key for i in new)
                    if new and spec.partial == "rollback":
                        self._rollback_partial(new, call)
                if len(new) < remaining and not named:
                    failed.update(o.key for o in group)  # short with no reason given: move on anyway
            if len(self.launched) < spec.count:
                raise CapacityUnavailable(
                    f"{len(self.launched)} of {spec.count} instance(s) for {owner.label()}: no offering left "
                    f"({'; '.join(sorted(self.unavailable.unavailable_offerings(self.clock())))} unavailable)")
            self._refresh_zones()
            result = FleetResult(owner, list(self.launched.values()), calls, marked, skipped, earlier, adopted,
                                 offerings[0].capacity if offerings else SPOT)
            if result.fallback:
                self._event("fallback", {"reason": "spot offerings unavailable: on-demand instances launched",
                                         "instances": [i.instance_id for i in result.instances
                                                       if i.offering.capacity == ON_DEMAND]})
            return result
        except BaseException as exc:
            self.rollback(f"launch failed: {type(exc).__name__}: {exc}")
            raise

    def _earlier_tries(self, offerings: Sequence[FleetOffering]) -> tuple[list[str], list[str]]:
        """Terminate live instances of earlier tries of this task; adopt this try's own (a re-run of the try)."""
        owner = self._spec.owner
        live = describe_instances(self.client, filters=owner.filters(), sleep=self.sleep)
        earlier = [i["InstanceId"] for i in live if tags_of(i).get(TAG_TRY) != str(owner.try_number)]
        if earlier:
            self.log(f"terminating {len(earlier)} instance(s) an earlier try of {owner.label()} left: "
                     f"{', '.join(earlier)}")
            terminate(self.client, earlier, sleep=self.sleep)
            self._event("terminated_earlier_try", {"instances": earlier})
        mine = [i for i in live if tags_of(i).get(TAG_TRY) == str(owner.try_number)]
        adopted = self._from_described(mine, offerings, None)
        self._add(adopted)
        return earlier, [i.instance_id for i in adopted]

    def _parse_instances(self, resp: Mapping[str, Any], group: Sequence[FleetOffering], token: str
                         ) -> list[LaunchedInstance]:
        out = []
        now = self.clock()
        for entry in resp.get("Instances") or []:
            lto = entry.get("LaunchTemplateAndOverrides") or {}
            offering = self._match(group, lto.get("Overrides"), entry.get("InstanceType"))
            if offering is None:
                offering = FleetOffering(entry.get("InstanceType") or "unknown", self.region, None,
                                         entry.get("Lifecycle") or group[0].capacity)
            zone = (lto.get("Overrides") or {}).get("AvailabilityZone")
            for instance_id in entry.get("InstanceIds") or []:
                if instance_id not in self.launched:
                    out.append(LaunchedInstance(instance_id, offering, zone, token, resp.get("FleetId"), now,
                                                self._spec.owner))
        return out

    def _handle_errors(self, spec: FleetSpec, resp: Mapping[str, Any], group: Sequence[FleetOffering],
                       failed: set[str], marked: list[dict[str, Any]], call: dict[str, Any]) -> bool:
        """Mark the offerings ``Errors[]`` names; raise on a configuration error.  Whether any was named."""
        named = False
        for err in resp.get("Errors") or []:
            code = str(err.get("ErrorCode") or "")
            lto = err.get("LaunchTemplateAndOverrides") or {}
            offering = self._match(group, lto.get("Overrides"), None)
            kind = error_kind(code)
            call["errors"].append({"code": code, "offering": offering.key if offering else None,
                                   "message": str(err.get("ErrorMessage") or "")[:300]})
            if kind == "config":
                raise FleetConfigError(f"CreateFleet: {code}: {err.get('ErrorMessage', '')}")
            targets = [offering] if offering is not None else []
            for o in targets:
                named = True
                failed.add(o.key)
                if kind == "capacity" and spec.unavailable_s > 0:
                    now = self.clock()
                    self.unavailable.mark_offering_unavailable(o.key, now + spec.unavailable_s, code, now)
                    marked.append({"offering": o.key, "code": code, "until": round(now + spec.unavailable_s, 3)})
            self._event("capacity_error", {"code": code, "offering": offering.key if offering else None,
                                           "kind": kind})
        return named

    def _rollback_partial(self, new: list[LaunchedInstance], call: dict[str, Any]) -> None:
        ids = [i.instance_id for i in new]
        self.log(f"partial fulfilment ({len(ids)} instance(s)) rolled back: {', '.join(ids)}")
        terminate(self.client, ids, sleep=self.sleep)
        for i in ids:
            self.launched.pop(i, None)
        call["rolled_back"] = ids
        self._event("rollback", {"instances": ids, "reason": "partial fulfilment, partial='rollback'"})

    def _refresh_zones(self) -> None:
        """The zones EC2 reports for the new instances (the override's is what was asked)."""
        ids = list(self.launched)
        try:
            described = describe_instances(self.client, ids=ids, sleep=self.sleep)
        except Exception as exc:  # noqa: BLE001 - eventual consistency: keep the requested zones
            self.log(f"zones of the new instances not read yet ({exc}); reporting the requested zones")
            return
        for inst in described:
            got = self.launched.get(inst.get("InstanceId"))
            zone = (inst.get("Placement") or {}).get("AvailabilityZone")
            if got is not None and zone:
                self.launched[got.instance_id] = LaunchedInstance(got.instance_id, got.offering, zone,
                                                                  got.client_token, got.fleet_id, got.launched_at,
                                                                  got.owner)

    # -- taking it back ---------------------------------------------------------------------------------------
    def rollback(self, reason: str) -> list[str]:
        """Terminate every instance this launch made or adopted, and what its tags say this try made.

        Never raises: what cannot be terminated now is found later by :mod:`effopt.spot.cleanup`.
        """
        ids = list(self.launched)
        if self._spec is not None:
            try:
                ids += [i["InstanceId"] for i in describe_instances(
                    self.client, filters=self._spec.owner.filters(same_try=True), sleep=self.sleep)]
            except Exception as exc:  # noqa: BLE001 - best effort: the cleanup DAG finds the rest by tag
                self.log(f"could not list this try's instances for the rollback: {exc}")
        ids = list(dict.fromkeys(ids))
        if not ids:
            return []
        try:
            done = terminate(self.client, ids, sleep=self.sleep)
        except Exception as exc:  # noqa: BLE001 - reported; the cleanup DAG terminates them by their tags
            self.log(f"rollback ({reason}): terminating {len(ids)} instance(s) failed: {exc}; the cleanup DAG "
                     "will find them by their owner tags")
            return []
        self.log(f"rollback ({reason}): terminated {', '.join(done)}")
        for i in done:
            self.launched.pop(i, None)
        self._event("rollback", {"instances": done, "reason": reason})
        return done


def _message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        return str((response.get("Error") or {}).get("Message") or exc)
    return str(exc)


def _epoch(value: Any, default: float) -> float:
    if value is None:
        return default
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    try:
        from datetime import datetime

        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default
