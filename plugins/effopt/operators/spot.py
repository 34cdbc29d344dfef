"""Spot placement in Airflow: decide, launch through EC2 CreateFleet, take back, clean up, and pods on spot nodes.

* :class:`SpotPlacementOperator`: the decision (:func:`effopt.spot.choose`) to XCom, priced from
  ``[effopt] spot_price_source``; works without any AWS account (the embedded snapshot);
* :class:`SpotFleetOperator`: the capacity, once (:mod:`effopt.spot.fleet`), with on-demand fallback and
  every instance tagged with its owner and recorded in the effopt store;
* :class:`SpotReleaseOperator`: terminates a DAG run's instances (the run's teardown);
* :class:`SpotCleanupOperator`: terminates orphans (:mod:`effopt.spot.cleanup`), reading task states over the
  Airflow REST API;
* :class:`~effopt.operators.spot_pod.SpotKubernetesPodOperator` (also importable from here): a
  KubernetesPodOperator on spot nodes whose try relaunches its pod after a disruption (spot first, then
  on-demand) instead of failing and spending one of the task's retries.

Without the AWS connection (``[effopt] aws_conn_id``, ``aws_default`` by default) the operators that need one
skip at once, saying which connection to define; a connection without a region or usable credentials fails
the task at once (no retry), saying what to set.  Every instance is tagged with this Airflow deployment
(``effopt:deployment``, :func:`deployment`): release and cleanup never touch another deployment's instances.
AWS credentials stay in the connection: nothing here logs, returns or stores them.
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from effopt.operators.errors import aws_config_errors, connection_env, fail_fast
from effopt.units import HOUR

#: Ranked offerings kept in a placement's XCom (the decision's pools and fallback are always there).
RANKED_IN_XCOM = 10
AWS_EXAMPLE = '{"conn_type": "aws", "extra": {"region_name": "us-east-1"}}'
F = TypeVar("F", bound=Callable[..., Any])


# -- shared helpers ----------------------------------------------------------------------------------------
def aws_conn_id(explicit: str = "") -> str:
    from effopt.airflow_settings import get_settings

    return explicit or get_settings().aws_conn_id


def aws_defined(conn_id: str) -> bool:
    from effopt.hooks.metrics import connection_defined

    return connection_defined(conn_id)


def require_aws(conn_id: str, what: str) -> None:
    """Skip the task at once, naming the connection and how to define it, when ``conn_id`` is not defined."""
    if not aws_defined(conn_id):
        raise AirflowSkipException(
            f"{what}: connection {conn_id!r} (the AWS account) is not defined; set "
            f"{connection_env(conn_id)}='{AWS_EXAMPLE}' (credentials from the environment, an instance profile or "
            f"the connection's login and password) or add it under Admin > Connections; [effopt] aws_conn_id names "
            "another connection")


def aws_config_failure(exc: BaseException, conn_id: str) -> AirflowFailException | None:
    """One line naming what connection ``conn_id`` lacks when ``exc`` is botocore's no-region or
    no-credentials error (a retry finds the same connection), else None."""
    if not isinstance(exc, aws_config_errors()):
        return None
    from botocore.exceptions import NoRegionError

    if isinstance(exc, NoRegionError):
        return AirflowFailException(
            f"connection {conn_id!r} (the AWS account) names no region: set region_name in its extra, e.g. "
            f"{connection_env(conn_id)}='{AWS_EXAMPLE}' (not retried)")
    return AirflowFailException(
        f"connection {conn_id!r} (the AWS account) has no usable credentials ({exc}): give its login and password "
        "(access key id and secret access key), or credentials from the environment or an instance profile "
        "(not retried)")


def aws_fail_fast(execute: F) -> F:
    """:func:`~effopt.operators.errors.fail_fast`, and botocore's no-region / no-credentials errors fail the task
    at once with a line naming the operator's AWS connection (:func:`aws_config_failure`)."""

    @functools.wraps(execute)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return execute(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised as it was, or as a fail naming the connection
            fail = aws_config_failure(exc, aws_conn_id(getattr(self, "aws_conn_id", "")))
            if fail is not None:
                raise fail from exc
            raise

    return fail_fast(wrapper)  # type: ignore[return-value]


def deployment() -> str:
    """This Airflow deployment's ``effopt:deployment`` tag: ``[effopt] deployment_id``, or a hash of the store
    URL (:func:`effopt.spot.fleet.deployment_of`)."""
    from effopt.airflow_settings import get_settings
    from effopt.spot.fleet import deployment_of

    settings = get_settings()
    return deployment_of(settings.deployment_id, settings.store_url)


def ec2_client(conn_id: str) -> Any:
    from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook

    return EC2Hook(aws_conn_id=conn_id, api_type="client_type").conn


def owner_of(context: Mapping[str, Any]) -> Any:
    from effopt.spot.fleet import Owner

    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    return Owner(ti.dag_id, ti.task_id, context.get("run_id") or ti.run_id,
                 -1 if map_index is None else int(map_index), int(getattr(ti, "try_number", 1) or 1),
                 deployment=deployment())


def _owner_dict(context: Mapping[str, Any]) -> dict[str, Any]:
    return owner_of(context).as_dict()


def _as_list(value: Any) -> list[Any]:
    """A templated list: a list, a JSON list in a string, a comma-separated string, or empty."""
    if value in (None, "", ()):
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return list(json.loads(text))
        return [v.strip() for v in text.split(",") if v.strip()]
    if isinstance(value, Mapping):
        return [value]
    return list(value)


def _number(value: Any, name: str, *, allow_none: bool = False) -> float | None:
    if value in (None, "") and allow_none:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} = {value!r} is not a number") from None
    return number


def exclusions(value: Any) -> list[tuple[str, str]]:
    """Spot pools not to use, as (instance type, AZ ID): from an interruption sensor's XCom (its ``exclude``),
    offering dicts, ``[type, az_id]`` pairs or ``"type|region|az|spot"`` keys."""
    out: list[tuple[str, str]] = []
    for item in _as_list(value):
        if isinstance(item, Mapping) and "exclude" in item:
            out += exclusions(item["exclude"])
        elif isinstance(item, Mapping) and item.get("instance_type") and item.get("az_id"):
            out.append((str(item["instance_type"]), str(item["az_id"])))
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            out.append((str(item[0]), str(item[1])))
        elif isinstance(item, str) and item.count("|") == 3:
            itype, _, az, _ = item.split("|")
            out.append((itype, az))
        elif item:
            raise ValueError(f"exclude item {item!r}: give an interruption event, an offering or [type, az_id]")
    return out


def _record_instances(store: Any, instances: Iterable[Any]) -> None:
    rows = []
    for i in instances:
        d = i.as_dict()
        rows.append({**i.owner.as_dict(), "instance_id": d["instance_id"], "fleet_id": d["fleet_id"],
                     "client_token": d["client_token"], "instance_type": d["instance_type"], "region": d["region"],
                     "az_id": d["az_id"], "zone": d["zone"], "capacity": d["capacity"],
                     "usd_per_hour": d["usd_per_hour"], "launched_at": d["launched_at"]})
    store.record_spot_instances(rows)


# -- placement -----------------------------------------------------------------------------------------------
class SpotPlacementOperator(BaseOperator):
    """Decide where a job runs: offerings in launch order, capacity type, expected cost and the reasons (XCom).

    :param hours: hours of work C; empty: the median wall time of the successful tries of ``history_task``
        (``dag_id.task_id``, or a task id of this DAG) in the effopt store's task-usage history
    :param vcpus, memory_gib, gpus, gpu_models: what one instance needs
    :param deadline_hours: the job must finish this many hours after it starts (empty: no deadline)
    :param checkpoint_hours: checkpoint interval k (0: continuous); a restart loses k/2 on average
    :param changeover_hours: time a restart costs d (relaunch, reload)
    :param regions: regions to consider; empty: the AWS connection's region when it is defined, else every
        region of the catalog
    :param instance_types: allowed instance types (empty: every type that fits)
    :param capacity_types: ``["spot", "on-demand"]`` (default), or one of them
    :param exclude: spot pools not to use: an interruption sensor's XCom, offerings or ``[type, az_id]`` pairs
    :param price_source: ``snapshot`` or ``ec2`` (default ``[effopt] spot_price_source``)
    """

    template_fields: Sequence[str] = ("hours", "vcpus", "memory_gib", "gpus", "gpu_models", "deadline_hours",
                                      "checkpoint_hours", "changeover_hours", "regions", "instance_types",
                                      "capacity_types", "exclude", "history_task", "price_source", "aws_conn_id",
                                      "max_pools")

    def __init__(self, *, hours: Any = None, vcpus: Any = 0, memory_gib: Any = 0, gpus: Any = 0,
                 gpu_models: Any = (), deadline_hours: Any = None, checkpoint_hours: Any = 0.0,
                 changeover_hours: Any = 0.2, regions: Any = None, instance_types: Any = (),
                 capacity_types: Any = ("spot", "on-demand"), exclude: Any = None, history_task: str = "",
                 price_source: str = "", aws_conn_id: str = "", max_pools: Any = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hours = hours
        self.vcpus = vcpus
        self.memory_gib = memory_gib
        self.gpus = gpus
        self.gpu_models = gpu_models
        self.deadline_hours = deadline_hours
        self.checkpoint_hours = checkpoint_hours
        self.changeover_hours = changeover_hours
        self.regions = regions
        self.instance_types = instance_types
        self.capacity_types = capacity_types
        self.exclude = exclude
        self.history_task = history_task
        self.price_source = price_source
        self.aws_conn_id = aws_conn_id
        self.max_pools = max_pools

    def _hours(self) -> tuple[float, str]:
        if self.hours not in (None, ""):
            return float(_number(self.hours, "hours")), "given"
        if not self.history_task:
            raise ValueError("hours is empty and no history_task is named: give the hours of work, or a DAG task "
                             "(dag_id.task_id) whose task-usage history gives them")
        from effopt.airflow_settings import get_store

        dag_id, _, task_id = self.history_task.rpartition(".")
        dag_id = dag_id or self.dag_id
        walls = [r.wall_s for r in get_store().task_usage(dag_id=dag_id, task_id=task_id) if r.state == "success"]
        if not walls:
            raise ValueError(f"hours is empty and {dag_id}.{task_id} has no successful try in the task-usage "
                             "history: give the hours of work")
        return statistics.median(walls) / HOUR, f"median wall time of {len(walls)} successful tries of " \
                                                f"{dag_id}.{task_id}"

    def _regions(self) -> tuple[tuple[str, ...], str]:
        regions = tuple(str(r) for r in _as_list(self.regions))
        if regions:
            return regions, "given"
        conn_id = aws_conn_id(self.aws_conn_id)
        if aws_defined(conn_id):
            region = ec2_client(conn_id).meta.region_name
            if region:
                return (region,), f"the region of connection {conn_id!r}"
        return (), "every region of the catalog"

    @aws_fail_fast
    def execute(self, context: Any) -> dict[str, Any]:
        from effopt.airflow_settings import get_settings, get_store
        from effopt.spot import JobSpec, catalog_for, choose

        settings = get_settings()
        source = self.price_source or settings.spot_price_source
        hours, hours_source = self._hours()
        regions, regions_source = self._regions()
        client = None
        if source == "ec2":
            conn_id = aws_conn_id(self.aws_conn_id)
            require_aws(conn_id, "placement with price_source 'ec2' skipped")
            client = ec2_client(conn_id)
        catalog = catalog_for(source, client=client)
        job = JobSpec(hours=hours, vcpus=float(self.vcpus or 0), memory_gib=float(self.memory_gib or 0),
                      gpus=int(self.gpus or 0), gpu_models=tuple(str(g) for g in _as_list(self.gpu_models)),
                      deadline_hours=_number(self.deadline_hours, "deadline_hours", allow_none=True),
                      changeover_hours=float(self.changeover_hours), checkpoint_hours=float(self.checkpoint_hours or 0),
                      regions=regions, instance_types=tuple(str(t) for t in _as_list(self.instance_types)),
                      capacity_types=tuple(str(c) for c in _as_list(self.capacity_types)),
                      max_pools=int(self.max_pools))
        excluded = exclusions(self.exclude)
        placement = choose(job, catalog, exclude=excluded)
        out = placement.as_dict()
        out["ranked_total"] = len(out["ranked"])
        out["ranked"] = out["ranked"][:RANKED_IN_XCOM]
        out.update({"hours_source": hours_source, "regions_source": regions_source,
                    "excluded": [list(e) for e in excluded]})
        for reason in placement.reasons:
            self.log.info("%s", reason)
        self.log.info("decision: %s -> %s (expected cost %s USD; %d offering(s) ranked, catalog %s)",
                      placement.capacity, placement.primary.key, out["primary"]["expected_cost"], out["ranked_total"],
                      placement.catalog_source)
        get_store().save_spot_decision(time.time(), _owner_dict(context), placement.capacity, placement.primary.key,
                                       out["primary"]["expected_cost"],
                                       {k: out[k] for k in ("capacity", "primary", "pools", "fallback", "reasons",
                                                            "job", "catalog_source", "excluded")})
        return out


# -- fleets ----------------------------------------------------------------------------------------------------
class SpotFleetOperator(BaseOperator):
    """Launch a placement's capacity with one EC2 CreateFleet (type ``instant``) per step, exactly once.

    :param placement: a :class:`SpotPlacementOperator` XCom (templated, e.g. ``place.output``)
    :param launch_template: the launch template's name, or its id (``lt-...``)
    :param count: instances to launch
    :param partial: ``top_up`` (a short answer is completed from the next offerings) or ``rollback`` (a short
        answer is terminated and the next offering gets the whole count)
    :param allow_on_demand: fall back to the placement's on-demand offering when spot is exhausted
    :param subnet_ids: subnets to launch in (each offering uses the one in its AZ ID); empty: the zones'
        default subnets
    :param allocation_strategy: EC2's spot allocation strategy among the pools of one call
    :param launch_timeout_s: the whole launch, every step included, must end in this time
    :param tags: more tags for the instances and the fleet (keys must not start with ``effopt:``)

    Returns (XCom) the instance ids, their zones and offerings, the capacity by type, the calls made and the
    offerings marked unavailable (:meth:`effopt.spot.fleet.FleetResult.as_dict`).  On failure, ``on_kill`` or
    ``execution_timeout``, every instance this try launched is terminated.
    """

    template_fields: Sequence[str] = ("placement", "launch_template", "launch_template_version", "count", "partial",
                                      "allow_on_demand", "subnet_ids", "allocation_strategy", "aws_conn_id", "tags",
                                      "launch_timeout_s")

    def __init__(self, *, placement: Any, launch_template: str, launch_template_version: str = "$Default",
                 count: Any = 1, partial: str = "top_up", allow_on_demand: Any = True, subnet_ids: Any = (),
                 allocation_strategy: str = "price-capacity-optimized", aws_conn_id: str = "", tags: Any = None,
                 launch_timeout_s: Any = 600, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.placement = placement
        self.launch_template = launch_template
        self.launch_template_version = launch_template_version
        self.count = count
        self.partial = partial
        self.allow_on_demand = allow_on_demand
        self.subnet_ids = subnet_ids
        self.allocation_strategy = allocation_strategy
        self.aws_conn_id = aws_conn_id
        self.tags = tags
        self.launch_timeout_s = launch_timeout_s
        self._launcher: Any = None

    @aws_fail_fast
    def execute(self, context: Any) -> dict[str, Any]:
        from effopt.airflow_settings import get_settings, get_store
        from effopt.spot.fleet import FleetLauncher, FleetSpec, offerings_from_placement

        conn_id = aws_conn_id(self.aws_conn_id)
        require_aws(conn_id, "no fleet launched")
        settings = get_settings()
        store = get_store()
        owner = owner_of(context)
        allow_od = self.allow_on_demand if isinstance(self.allow_on_demand, bool) else \
            str(self.allow_on_demand).lower() in ("true", "1", "yes")
        offerings = offerings_from_placement(self.placement, allow_on_demand=allow_od)
        spec = FleetSpec(owner, tuple(offerings), str(self.launch_template), str(self.launch_template_version),
                         count=int(self.count), partial=str(self.partial),
                         subnet_ids=tuple(str(s) for s in _as_list(self.subnet_ids)),
                         allocation_strategy=str(self.allocation_strategy),
                         unavailable_s=settings.spot_unavailable_minutes * 60, timeout_s=float(self.launch_timeout_s),
                         extra_tags={str(k): str(v) for k, v in (self.tags or {}).items()})

        def on_event(kind: str, detail: dict[str, Any]) -> None:
            now = time.time()
            if kind in ("rollback", "terminated_earlier_try"):
                store.end_spot_instances(detail.get("instances", []), now,
                                         detail.get("reason") or "an earlier try of the same task")
            store.record_spot_event(now, kind, owner.as_dict(), detail)

        self._launcher = FleetLauncher(ec2_client(conn_id), unavailable=store,
                                       on_launch=lambda new: _record_instances(store, new), on_event=on_event,
                                       log=self.log.info)
        self.log.info("launching %d instance(s) for %s in %s (ClientToken from the try)", spec.count, owner.label(),
                      ", ".join(o.key for o in offerings))
        result = self._launcher.launch(spec)
        out = result.as_dict()
        for i in result.instances:
            self.log.info("instance %s: %s %s in %s (%s USD/h)", i.instance_id, i.offering.instance_type,
                          i.offering.capacity, i.zone, i.offering.usd_per_hour)
        if result.fallback:
            self.log.warning("spot was exhausted: %d instance(s) on on-demand", out["capacity"]["on-demand"])
        return out

    def on_kill(self) -> None:
        if self._launcher is not None:
            from effopt.airflow_settings import get_store

            done = self._launcher.rollback("the task was killed")
            get_store().end_spot_instances(done, time.time(), "the task was killed (on_kill)")


def wait_until_running(fleet: Mapping[str, Any] | None, aws_conn_id_: str = "",
                       timeout_s: float = 600) -> dict[str, Any]:
    """Wait until a fleet's instances run (their launch template's user data starts the work); their ids."""
    conn_id = aws_conn_id(aws_conn_id_)
    require_aws(conn_id, "nothing to wait for")
    ids = list((fleet or {}).get("instance_ids") or [])
    if not ids:
        raise AirflowSkipException("the fleet launched no instance")
    client = ec2_client(conn_id)
    delay = 5
    client.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig={
        "Delay": delay, "MaxAttempts": max(1, int(timeout_s // delay))})
    return {"running": ids, "zones": (fleet or {}).get("zones", {})}


def remaining_work(fleet: Mapping[str, Any], notice: Mapping[str, Any], *, hours: float,
                   deadline_hours: float | None, checkpoint_hours: float, changeover_hours: float = 0.2,
                   now: float | None = None) -> dict[str, Any]:
    """What is left to do after an interruption, from the last checkpoint: hours of work, hours to the
    deadline, and the capacity types still able to meet it (on-demand only when spot's restart cannot fit).

    The work ran from the fleet's launch to the notice; with checkpoints every ``checkpoint_hours`` what
    survives is the last checkpoint before the notice (all of it with continuous checkpoints, 0)."""
    t = time.time() if now is None else now
    launched = min((i["launched_at"] for i in fleet.get("instances", [])), default=t)
    at = float(notice.get("at") or t)
    elapsed = max(at - launched, 0.0) / HOUR
    done = elapsed if checkpoint_hours <= 0 else (elapsed // checkpoint_hours) * checkpoint_hours
    left = max(hours - done, 0.0)
    if left <= 0:
        raise AirflowSkipException(f"the work ({hours:g} h) was done by its last checkpoint: nothing to relaunch")
    out: dict[str, Any] = {"hours": round(left, 6), "done_hours": round(done, 6), "elapsed_hours": round(elapsed, 6),
                           "capacity_types": ["spot", "on-demand"], "deadline_hours": None}
    if deadline_hours is not None:
        time_left = deadline_hours - (t - launched) / HOUR
        if time_left < left + changeover_hours:
            # Not even one more changeover fits: on-demand, now, without a deadline to plan for.
            out["capacity_types"] = ["on-demand"]
            out["reason"] = (f"{time_left:.2f} h to the deadline < {left:.2f} h of work + {changeover_hours:g} h "
                             "changeover: on-demand")
        else:
            out["deadline_hours"] = round(time_left, 6)
    return out


# -- release and cleanup ----------------------------------------------------------------------------------------
class SpotReleaseOperator(BaseOperator):
    """Terminate the effopt-launched instances of this DAG run (of ``fleet_task_ids`` only, when given) that
    this deployment launched (``effopt:deployment``): the run's teardown.  Returns ``{"terminated": [...]}``."""

    template_fields: Sequence[str] = ("fleet_task_ids", "aws_conn_id")

    def __init__(self, *, fleet_task_ids: Any = (), aws_conn_id: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fleet_task_ids = fleet_task_ids
        self.aws_conn_id = aws_conn_id

    @aws_fail_fast
    def execute(self, context: Any) -> dict[str, Any]:
        from effopt.airflow_settings import get_store
        from effopt.spot.fleet import (
            LIVE_STATES,
            TAG_DAG,
            TAG_DEPLOYMENT,
            TAG_MANAGED,
            TAG_RUN,
            TAG_TASK,
            describe_instances,
            terminate,
        )

        conn_id = aws_conn_id(self.aws_conn_id)
        require_aws(conn_id, "nothing to release")
        client = ec2_client(conn_id)
        run_id = context.get("run_id") or context["ti"].run_id
        filters = [{"Name": f"tag:{TAG_MANAGED}", "Values": ["true"]},
                   {"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [deployment()]},
                   {"Name": f"tag:{TAG_DAG}", "Values": [context["ti"].dag_id]},
                   {"Name": f"tag:{TAG_RUN}", "Values": [run_id]},
                   {"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
        tasks = [str(t) for t in _as_list(self.fleet_task_ids)]
        if tasks:
            filters.append({"Name": f"tag:{TAG_TASK}", "Values": tasks})
        ids = [i["InstanceId"] for i in describe_instances(client, filters=filters)]
        done = terminate(client, ids) if ids else []
        get_store().end_spot_instances(done, time.time(), f"released by {self.task_id} at the end of the run")
        self.log.info("released %d instance(s) of run %s: %s", len(done), run_id, ", ".join(done) or "none")
        return {"terminated": done}


class SpotCleanupOperator(BaseOperator):
    """Terminate effopt-launched instances whose owning task try is no longer running (or handing over).

    Task states come from the Airflow REST API (``[effopt] airflow_api_conn_id``), never the metadata DB; the
    API is asked once first, and a missing connection or a refused login (401/403) fails the task at once.
    Only this deployment's instances (``effopt:deployment``) are looked at.
    :param dry_run: list the orphans, terminate nothing
    :param min_age_minutes: leave instances younger than this alone (a launch is never raced)
    :param dag_ids: look at these DAGs' instances only (empty: all)

    Returns the report (:meth:`effopt.spot.cleanup.CleanupReport.as_dict`), plus the recorded instances found
    gone from EC2 (interrupted or terminated outside effopt), which the store then marks ended.
    """

    template_fields: Sequence[str] = ("dry_run", "min_age_minutes", "dag_ids", "aws_conn_id", "airflow_api_conn_id")

    def __init__(self, *, dry_run: Any = False, min_age_minutes: Any = 10, dag_ids: Any = (), aws_conn_id: str = "",
                 airflow_api_conn_id: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dry_run = dry_run
        self.min_age_minutes = min_age_minutes
        self.dag_ids = dag_ids
        self.aws_conn_id = aws_conn_id
        self.airflow_api_conn_id = airflow_api_conn_id

    @aws_fail_fast
    def execute(self, context: Any) -> dict[str, Any]:
        from effopt.airflow_settings import get_store
        from effopt.hooks.airflow_api import AirflowApiHook
        from effopt.spot.cleanup import OwnerState, cleanup

        conn_id = aws_conn_id(self.aws_conn_id)
        require_aws(conn_id, "nothing to clean up")
        dry_run = self.dry_run if isinstance(self.dry_run, bool) else str(self.dry_run).lower() in ("true", "1", "yes")
        client = ec2_client(conn_id)
        api = AirflowApiHook(self.airflow_api_conn_id)
        self._check_api(api)

        def owner_state(owner: Any) -> OwnerState:
            run = api.dag_run(owner.dag_id, owner.run_id)
            if run is None:
                return OwnerState(None)
            ti = api.task_instance(owner.dag_id, owner.run_id, owner.task_id, owner.map_index)
            if ti is None:
                return OwnerState(run.get("state"))
            return OwnerState(run.get("state"), ti.get("state"), ti.get("try_number"))

        now = time.time()
        report = cleanup(client, owner_state, deployment=deployment(), dry_run=dry_run,
                         min_age_s=float(self.min_age_minutes) * 60, now=now,
                         dag_ids=[str(d) for d in _as_list(self.dag_ids)])
        store = get_store()
        reasons = {o["instance_id"]: o["reason"] for o in report.orphans}
        for instance_id in report.terminated:
            store.end_spot_instances([instance_id], now, f"orphan, terminated by the cleanup: {reasons[instance_id]}")
        gone = [] if dry_run else self._reconcile(client, store, now)
        for orphan in report.orphans:
            self.log.info("orphan %s (%s): %s", orphan["instance_id"], orphan["instance_type"], orphan["reason"])
        for error in report.errors:
            self.log.warning("%s", error)
        self.log.info("%s", report.summary())
        out = report.as_dict()
        out["recorded_gone"] = gone
        if report.orphans or gone:
            store.record_spot_event(now, "cleanup", _owner_dict(context), {
                "dry_run": dry_run, "orphans": [o["instance_id"] for o in report.orphans],
                "terminated": report.terminated, "recorded_gone": gone, "summary": report.summary()})
        return out

    def _check_api(self, api: Any) -> None:
        """Ask the REST API once before the cleanup: without the connection, or with a login the API refuses
        (401/403), every owner's state would be unknown and every instance kept, a cleanup that terminates
        nothing and succeeds; that fails the task at once.  An API that is down (5xx, unreachable) is left to
        the per-owner rule: those instances are kept and reported, and the next run tries again."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        from effopt.hooks.airflow_api import AirflowApiError

        conn_id = api.airflow_api_conn_id
        try:
            api.request("GET", "/api/v2/version")
        except AirflowNotFoundException as exc:
            raise AirflowFailException(f"{exc} (the cleanup reads task states through it; not retried)") from None
        except AirflowApiError as exc:
            if exc.status in (401, 403):
                raise AirflowFailException(
                    f"connection {conn_id!r} (Airflow's REST API) was refused with HTTP {exc.status}: give it the "
                    "login and password of an Airflow user allowed to read DAG runs and task instances "
                    "(not retried)") from None
            self.log.warning("Airflow REST API through %r not answering now (%s); owners whose state cannot be "
                             "read keep their instances", conn_id, exc)

    def _reconcile(self, client: Any, store: Any, now: float) -> list[str]:
        """Recorded instances EC2 no longer runs (an interruption, a console click): marked ended in the store.
        Only the instances recorded in this client's region are looked at: another region's are not in its
        answer, which says nothing about them."""
        from effopt.spot.fleet import LIVE_STATES, describe_instances

        region = getattr(getattr(client, "meta", None), "region_name", None)
        open_ids = [r["instance_id"] for r in store.spot_instances(open_only=True) if r.get("region") == region]
        gone: list[str] = []
        for start in range(0, len(open_ids), 200):
            chunk = open_ids[start:start + 200]
            live = {i["InstanceId"] for i in describe_instances(client, filters=[
                {"Name": "instance-id", "Values": chunk},
                {"Name": "instance-state-name", "Values": list(LIVE_STATES)}])}
            gone += [i for i in chunk if i not in live]
        store.end_spot_instances(gone, now, "no longer running in EC2 (interrupted, or terminated outside effopt)")
        return gone


def __getattr__(name: str) -> Any:
    """:class:`~effopt.operators.spot_pod.SpotKubernetesPodOperator`, imported on first use: the Kubernetes
    provider takes seconds to import, which a DAG or task that does not use it should not pay."""
    if name == "SpotKubernetesPodOperator":
        from effopt.operators.spot_pod import SpotKubernetesPodOperator

        return SpotKubernetesPodOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
