"""The GPU inventory and the GPU lease backend as ``[effopt]`` configures them (``gpu_*`` options).

``gpu_inventory``: ``static`` reads ``gpu_inventory_file``; ``nvml`` this host's driver; ``kubernetes`` the
cluster of ``kubernetes_conn_id`` (``KubernetesHook(...).api_client``); ``prometheus`` the DCGM exporter's
metrics in ``prometheus_conn_id``; ``auto`` NVML when a driver answers, else the static file. Leases live in
Redis when the ``effopt_redis`` connection (``[effopt] redis_conn_id``) exists, else in the effopt store.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from effopt.airflow_settings import get_settings

if TYPE_CHECKING:
    from effopt.gpu.inventory import Inventory
    from effopt.gpu.leases import GpuLeaseManager, LeaseBackend

log = logging.getLogger(__name__)
REDIS_PREFIX = "effopt:gpu"
DCGM_LOOKBACK_S = 300.0


class GpuHook(BaseHook):
    hook_name = "effopt GPU inventory and leases"

    def __init__(self, inventory: str | None = None, inventory_file: str | None = None) -> None:
        super().__init__()
        self.settings = get_settings()
        self.kind = inventory or self.settings.gpu_inventory
        self.inventory_file = self.settings.gpu_inventory_file if inventory_file is None else inventory_file

    # -- the inventory ------------------------------------------------------------------------------------
    def inventory(self) -> Inventory:
        from effopt.gpu.inventory import NvmlInventory, StaticInventory, read_auto

        if self.kind == "static":
            return StaticInventory(self.inventory_file or None).read()
        if self.kind == "nvml":
            return NvmlInventory().read()
        if self.kind == "auto":
            return read_auto(self.inventory_file or None)
        if self.kind == "kubernetes":
            from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

            from effopt.gpu.inventory import KubernetesInventory

            return KubernetesInventory(KubernetesHook(conn_id=self.settings.kubernetes_conn_id).api_client).read()
        if self.kind == "prometheus":
            from effopt.gpu.inventory import PrometheusInventory
            from effopt.hooks.prometheus import PrometheusHook

            now = time.time()
            source = PrometheusHook(self.settings.prometheus_conn_id).get_source(start=now - DCGM_LOOKBACK_S, end=now)
            return PrometheusInventory(source).read()
        raise ValueError(f"[effopt] gpu_inventory {self.kind!r} is not one of auto, static, nvml, kubernetes, "
                         "prometheus")

    # -- leases -------------------------------------------------------------------------------------------------
    def redis_client(self) -> Any | None:
        """A client of ``effopt_redis`` when that connection exists, else None."""
        from effopt.hooks.cache import redis_url_from_connection

        try:
            conn = self.get_connection(self.settings.redis_conn_id)
        except AirflowNotFoundException:
            return None
        import redis

        timeout = self.settings.cache_timeout_s
        return redis.Redis.from_url(redis_url_from_connection(conn), socket_timeout=timeout,
                                    socket_connect_timeout=timeout)

    def lease_backend(self) -> LeaseBackend:
        from effopt.gpu.leases import RedisLeaseBackend, StoreLeaseBackend

        client = self.redis_client()
        if client is not None:
            return RedisLeaseBackend(client, REDIS_PREFIX)
        from effopt.airflow_settings import get_store

        return StoreLeaseBackend(get_store())

    def lease_manager(self, inventory: Inventory | None = None, policy: str | None = None) -> GpuLeaseManager:
        from effopt.gpu.leases import GpuLeaseManager

        return GpuLeaseManager(self.lease_backend(), inventory if inventory is not None else self.inventory(),
                               policy or self.settings.gpu_policy, ttl_s=self.settings.gpu_lease_ttl_s)
