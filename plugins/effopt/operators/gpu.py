"""GPU tasks: a lease on concrete devices before ``execute``, handed to the task, renewed, released.

:class:`GpuTaskMixin` goes in front of any operator (``class MyOp(GpuTaskMixin, BaseOperator)``):

* ``pool`` / ``pool_slots`` come from the request (``[effopt] gpu_pool_unit``): ``effopt_gpu`` by default, a
  tenant's quota pool with ``tenant=``, any pool you name with ``pool=``;
* before ``execute`` it takes a lease (:class:`effopt.gpu.leases.GpuLeaseManager`, placed by ``[effopt]
  gpu_policy``). When nothing fits now the task defers: it waits in the triggerer
  (:class:`~effopt.triggers.gpu.GpuCapacityTrigger`) without a worker slot, then leases and runs;
* on LocalExecutor / CeleryExecutor workers the lease is on this worker's node (the inventory node named like
  the host, ``EFFOPT_GPU_NODE``, or the inventory's only node), and the task gets ``CUDA_VISIBLE_DEVICES`` and
  ``NVIDIA_VISIBLE_DEVICES``; :class:`GpuKubernetesPodOperator` instead pins its pod to the leased node (node
  affinity) and asks ``nvidia.com/gpu`` (or the MIG resource) in the container's limits;
* a thread renews the lease every third of ``[effopt] gpu_lease_ttl_s``; the lease is released after success,
  failure or kill (``on_kill``); a task killed outright stops renewing and its lease expires.

With no GPUs in the inventory (``make run`` on a machine without GPUs) the task runs without a lease, with
``CUDA_VISIBLE_DEVICES=""``, and its log says so.
"""

from __future__ import annotations

import math
import os
import socket
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from effopt.gpu.leases import Holder, Lease, LeaseRequest, LeaseRequestError
from effopt.operators.graph import GraphNodeOperator

NODE_ENV = "EFFOPT_GPU_NODE"
LEASE_XCOM = "effopt_gpu_lease"
NO_INVENTORY = ("effopt: no GPU inventory ([effopt] gpu_inventory found no GPUs: %s); running without a GPU lease, "
                "with CUDA_VISIBLE_DEVICES=''")


def check_gpu_policy(name: str | None) -> str | None:
    """``name`` when it is a placement policy (or None: ``[effopt] gpu_policy``); a typo fails when the DAG is
    parsed, naming the known ones."""
    from effopt.gpu.policies import REGISTRY

    if name is not None and name not in REGISTRY:
        raise LeaseRequestError(f"gpu_policy {name!r} is not a placement policy (known: {', '.join(REGISTRY)})")
    return name


def lease_request(gpus: int = 1, gpu_milli: int | None = None, gpu_memory_gib: float | None = None,
                  models: Iterable[str] | str | None = None, nodes: Sequence[str] = ()) -> LeaseRequest:
    """A :class:`LeaseRequest` from a GPU task's arguments (ValueError names a bad one)."""
    if isinstance(models, str):
        models = [m for m in models.split("|") if m]
    memory = 0
    if gpu_memory_gib is not None:
        if isinstance(gpu_memory_gib, bool) or not isinstance(gpu_memory_gib, (int, float)) or gpu_memory_gib < 0 \
                or not math.isfinite(gpu_memory_gib):
            raise LeaseRequestError(f"gpu_memory_gib must be a number >= 0, got {gpu_memory_gib!r}")
        memory = math.ceil(gpu_memory_gib * 1024)
    return LeaseRequest(gpus, gpu_milli, memory, tuple(models or ()), tuple(nodes))


def gpu_pool(models: Iterable[str] | str | None = None, tenant: str | None = None) -> str:
    """The pool of a GPU task: its tenant's quota pool (``[effopt] gpu_quotas``), else ``effopt_gpu``."""
    from effopt.airflow_settings import get_settings
    from effopt.gpu.pools import ALL_POOL, pool_for

    if isinstance(models, str):
        models = [m for m in models.split("|") if m]
    return pool_for(gpu_pool=ALL_POOL, tenant=tenant, models=list(models or ()), quotas=get_settings().gpu_quotas)


def gpu_pool_slots(gpus: int = 1, gpu_milli: int | None = None, gpu_memory_gib: float | None = None,
                   models: Iterable[str] | str | None = None) -> int:
    """Its pool slots in ``[effopt] gpu_pool_unit`` (ValueError names a malformed request)."""
    from effopt.airflow_settings import get_settings

    return max(1, lease_request(gpus, gpu_milli, gpu_memory_gib, models).pool_slots(get_settings().gpu_pool_unit))


def holder_of(context: Any) -> Holder:
    """The task try asking for a lease, on the host Airflow records for it (``[core] hostname_callable``)."""
    ti = context["ti"]
    return Holder(ti.dag_id, ti.task_id, ti.run_id, int(getattr(ti, "map_index", -1) if
                                                        getattr(ti, "map_index", None) is not None else -1),
                  int(getattr(ti, "try_number", 1) or 1), getattr(ti, "hostname", None) or socket.gethostname(),
                  os.getpid())


def worker_nodes(inventory: Any) -> tuple[str, ...]:
    """The inventory node this worker is: ``EFFOPT_GPU_NODE``, the host name (full or short), or the only node."""
    names = [n.name for n in inventory.nodes]
    wanted = os.environ.get(NODE_ENV, "").strip()
    if wanted:
        if wanted not in names:
            raise LeaseRequestError(f"{NODE_ENV}={wanted!r} is not a GPU node of the inventory ({', '.join(names)})")
        return (wanted,)
    host = socket.gethostname()
    for candidate in (host, host.split(".")[0]):
        if candidate in names:
            return (candidate,)
    if len(names) == 1:
        return (names[0],)
    raise LeaseRequestError(f"this worker ({host}) is none of the inventory's GPU nodes ({', '.join(names)}): name "
                            f"its node after the host, or set {NODE_ENV} on the worker")


class _Renewer:
    """Renews a lease every ``ttl / 3`` seconds in a daemon thread until stopped."""

    def __init__(self, manager: Any, lease: Lease, log: Any) -> None:
        self.manager, self.lease, self.log = manager, lease, log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="effopt-gpu-lease-renewer", daemon=True)

    def start(self) -> _Renewer:
        self._thread.start()
        return self

    def _run(self) -> None:
        every = max(self.manager.ttl_s / 3.0, 0.5)
        while not self._stop.wait(every):
            try:
                renewed = self.manager.renew(self.lease)
            except Exception as exc:  # noqa: BLE001 - a failed renewal is retried at the next tick
                self.log.warning("effopt: GPU lease %s not renewed (%s: %s); trying again in %.0f s",
                                 self.lease.lease_id, type(exc).__name__, exc, every)
                continue
            if renewed is None:
                self.log.error("effopt: GPU lease %s expired (not renewed within [effopt] gpu_lease_ttl_s): its GPUs "
                               "may be leased to another task while this one runs", self.lease.lease_id)
                return
            self.lease = renewed

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class GpuTaskMixin:
    """Lease GPUs around ``execute`` (see the module docstring). Put it first among the bases.

    :param gpus: GPUs asked (whole GPUs when more than one)
    :param gpu_milli: thousandths of one GPU (``gpus=1`` only), e.g. 500 for half a GPU
    :param gpu_memory_gib: least memory per GPU
    :param models: allowed GPU models (a list, or ``A100|H100``); empty: any whole-GPU model
    :param gpu_policy: placement policy (default ``[effopt] gpu_policy``)
    :param tenant: run in the tenant's quota pool (``[effopt] gpu_quotas``)
    :param gpu_wait_timeout_s: give up waiting for capacity after this long (default: wait)
    """

    local_devices = True  # hand devices to this process (False: a pod on the leased node gets them)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Airflow's operator metaclass wraps (applies default_args to) only an __init__ the class itself defines:
        # give every subclass one, so ``class MyOp(GpuTaskMixin, SomeOperator): ...`` needs none.
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            def __init__(self: Any, **kw: Any) -> None:
                super(cls, self).__init__(**kw)

            cls.__init__ = __init__  # type: ignore[method-assign]

    def __init__(self, *, gpus: int = 1, gpu_milli: int | None = None, gpu_memory_gib: float | None = None,
                 models: Iterable[str] | str | None = None, gpu_policy: str | None = None, tenant: str | None = None,
                 gpu_wait_timeout_s: float | None = None, **kwargs: Any) -> None:
        request = lease_request(gpus, gpu_milli, gpu_memory_gib, models)
        if kwargs.get("pool") is None:
            kwargs["pool"] = gpu_pool(request.models, tenant)
        if kwargs.get("pool_slots") is None:
            kwargs["pool_slots"] = gpu_pool_slots(gpus, gpu_milli, gpu_memory_gib, models)
        super().__init__(**kwargs)
        self.gpu_request = request
        self.gpu_policy = check_gpu_policy(gpu_policy)
        self.gpu_tenant = tenant
        self.gpu_wait_timeout_s = gpu_wait_timeout_s
        self._gpu_lease: Lease | None = None
        self._gpu_manager: Any = None
        self._gpu_renewer: _Renewer | None = None

    # -- the lease -----------------------------------------------------------------------------------------
    def execute(self, context: Any) -> Any:
        return self._gpu_run(context, self._gpu_begin(context))

    def _gpu_resume(self, context: Any, event: dict[str, Any] | None = None,
                    gpu_timeout_at: float | None = None) -> Any:
        from airflow.sdk.exceptions import AirflowSensorTimeout

        event = event or {}
        if event.get("status") == "error":
            raise AirflowFailException(f"effopt: this GPU request can no longer be placed: {event.get('reason')}")
        if event.get("status") == "timeout":  # the wait the task asked for is over: failed, not retried
            raise AirflowSensorTimeout(f"effopt: no GPU capacity for {self.gpu_request.describe()} within "
                                       f"{self.gpu_wait_timeout_s} s ({event.get('reason', '')})")
        # Resumed because it fits: another task may take it first, and then the wait goes on to the same end.
        return self._gpu_run(context, self._gpu_begin(context, gpu_timeout_at))

    def _gpu_begin(self, context: Any, timeout_at: float | None = None) -> Lease | None:
        """The lease (None without GPUs); defers while nothing fits, until ``timeout_at`` (default: now +
        ``gpu_wait_timeout_s``).  A configuration error fails the task at once; a transient one is retried."""
        from effopt.operators.errors import as_fail, classify

        try:
            return self._gpu_lease_or_defer(context, timeout_at)
        except Exception as exc:
            if classify(exc) != "config":  # (TaskDeferred is a BaseException: it passes through)
                raise
            raise as_fail(exc) from exc

    def _gpu_lease_or_defer(self, context: Any, timeout_at: float | None) -> Lease | None:
        import time

        from effopt.airflow_settings import get_settings
        from effopt.gpu.inventory import InventoryError
        from effopt.gpu.leases import NoCapacity
        from effopt.hooks.gpu import GpuHook

        log = self.log  # type: ignore[attr-defined]
        hook = GpuHook()
        try:
            inventory = hook.inventory()
        except InventoryError as exc:
            raise AirflowFailException(f"effopt: the GPU inventory cannot be read: {exc}") from exc
        if inventory.empty:
            log.warning(NO_INVENTORY, inventory.detail)
            return None
        try:
            nodes = worker_nodes(inventory) if self.local_devices else ()
            request = LeaseRequest(self.gpu_request.gpus, self.gpu_request.gpu_milli, self.gpu_request.gpu_memory_mib,
                                   self.gpu_request.models, nodes)
            manager = hook.lease_manager(inventory, self.gpu_policy)
            holder = holder_of(context)
            got = manager.acquire(request, holder)
        except LeaseRequestError as exc:
            raise AirflowFailException(f"effopt: GPU request {self.gpu_request.describe()} cannot be placed: {exc}") \
                from exc
        for warning in manager.last_warnings:
            log.warning("effopt: %s", warning)
        if isinstance(got, NoCapacity):
            from effopt.triggers.gpu import GpuCapacityTrigger

            settings = get_settings()
            if timeout_at is None and self.gpu_wait_timeout_s:
                timeout_at = time.time() + float(self.gpu_wait_timeout_s)
            log.info("effopt: no GPU capacity now for %s (%s); waiting in the triggerer (deferred, no worker slot "
                     "held), checking every %.0f s; gave the slot back on %s", request.describe(), got.reason,
                     settings.gpu_capacity_poll_s, holder.host)
            self.defer(  # type: ignore[attr-defined]
                trigger=GpuCapacityTrigger(request.to_dict(), self.gpu_policy, settings.gpu_capacity_poll_s,
                                           timeout_at),
                method_name="_gpu_resume", kwargs={"gpu_timeout_at": timeout_at})
        self._gpu_manager = manager
        log.info("effopt: GPU lease %s on node %s: %s %s (%s thousandths each) from %s, %s policy, expires in %.0f s "
                 "unless renewed", got.lease_id, got.node, got.model, ",".join(map(str, got.devices)), got.gpu_milli,
                 manager.backend.describe(), manager.policy_name, manager.ttl_s)
        return got

    def _gpu_run(self, context: Any, lease: Lease | None) -> Any:
        saved = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")}
        self._gpu_lease = lease
        try:  # from here on, whatever fails releases the lease
            self._gpu_check_hand_over(lease)
            if lease is not None:
                self._gpu_renewer = _Renewer(self._gpu_manager, lease, self.log).start()  # type: ignore[attr-defined]
                ti = context.get("ti")
                if ti is not None:
                    devices = lease.visible_devices() if self.local_devices else None
                    ti.xcom_push(key=LEASE_XCOM, value={**lease.to_dict(), "visible_devices": devices})
            self._gpu_hand_over(lease)
            return super().execute(context)  # type: ignore[misc]
        finally:
            self._gpu_release()
            if self.local_devices:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v

    def _gpu_check_hand_over(self, lease: Lease | None) -> None:
        """A lease this task cannot hand over (a MIG slice without its UUID) fails it at once."""
        if lease is not None and self.local_devices:
            try:
                lease.visible_devices()
            except LeaseRequestError as exc:
                raise AirflowFailException(f"effopt: {exc}") from exc

    def _gpu_hand_over(self, lease: Lease | None) -> None:
        """Give the devices to the task: this process's environment (its children inherit it)."""
        value = lease.visible_devices() if lease is not None else ""
        os.environ["CUDA_VISIBLE_DEVICES"] = value
        os.environ["NVIDIA_VISIBLE_DEVICES"] = value or "none"
        self.log.info("effopt: CUDA_VISIBLE_DEVICES=%r", value)  # type: ignore[attr-defined]

    def _gpu_release(self) -> None:
        renewer, self._gpu_renewer = self._gpu_renewer, None
        if renewer is not None:
            renewer.stop()
        lease, self._gpu_lease = self._gpu_lease, None
        if lease is None or self._gpu_manager is None:
            return
        try:
            released = self._gpu_manager.release(renewer.lease if renewer is not None else lease)
            self.log.info("effopt: GPU lease %s %s", lease.lease_id,  # type: ignore[attr-defined]
                          "released" if released else "had expired already")
        except Exception as exc:  # noqa: BLE001 - a lease not released expires after its TTL
            self.log.warning("effopt: GPU lease %s not released (%s: %s); it expires after [effopt] "  # type: ignore
                             "gpu_lease_ttl_s", lease.lease_id, type(exc).__name__, exc)

    def on_kill(self) -> None:
        self._gpu_release()
        super().on_kill()  # type: ignore[misc]


def _python_operator() -> type:
    from airflow.providers.standard.operators.python import PythonOperator

    return PythonOperator


class GpuPythonOperator(GpuTaskMixin, _python_operator()):  # type: ignore[misc]
    """``PythonOperator`` with leased GPUs (what ``@gpu_task`` makes, as an operator)."""


class GpuGraphNodeOperator(GpuTaskMixin, GraphNodeOperator):
    """A graph node that needs GPUs (``resources.gpu`` > 0): the lease around the node's function."""
