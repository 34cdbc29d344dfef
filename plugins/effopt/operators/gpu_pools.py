"""Keep Airflow's GPU pools equal to the GPU inventory, over the REST API (the ``effopt_gpu_pools`` DAG's task).

The plan is :func:`effopt.gpu.pools.plan_pools`; this task reads the inventory (:class:`~effopt.hooks.gpu.GpuHook`)
and the pools (``GET /api/v2/pools``), applies the plan (``POST``, ``PATCH``, ``DELETE``) unless it is a dry run,
records every change in the effopt store (``effopt_gpu_pool_change``) and the inventory it saw
(``effopt_gpu_inventory``, for the effopt page), and returns the plan as its XCom.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from effopt.operators.errors import fail_fast


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class GpuPoolSyncOperator(BaseOperator):
    """Create, resize and delete the GPU pools (``effopt_gpu``, ``effopt_gpu_<model>``, ``effopt_quota_*``) and
    create ``effopt_serial``; idempotent.

    :param dry_run: plan and report, change nothing (templated)
    :param airflow_api_conn_id: the REST API connection (default ``[effopt] airflow_api_conn_id``)

    Returns (XCom) ``{"inventory", "source", "gpus", "unit", "dry_run", "changes": [...], "pools": {name: slots}}``.
    """

    template_fields: Sequence[str] = ("dry_run", "airflow_api_conn_id")
    ui_color = "#fdf2e9"

    def __init__(self, *, dry_run: Any = False, airflow_api_conn_id: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dry_run = dry_run
        self.airflow_api_conn_id = airflow_api_conn_id

    @fail_fast
    def execute(self, context: Any) -> dict[str, Any]:
        from effopt.airflow_settings import get_settings, get_store
        from effopt.gpu.inventory import InventoryError
        from effopt.gpu.pools import plan_pools
        from effopt.hooks.airflow_api import AirflowApiError, AirflowApiHook
        from effopt.hooks.gpu import GpuHook

        settings = get_settings()
        dry_run = _truthy(self.dry_run)
        try:
            inventory = GpuHook().inventory()
        except InventoryError as exc:
            raise AirflowFailException(f"the GPU inventory cannot be read: {exc}") from exc
        self.log.info("effopt GPU inventory (%s: %s): %s", inventory.source, inventory.detail, inventory.describe())
        api = AirflowApiHook(self.airflow_api_conn_id)
        try:
            existing = api.pools()
        except AirflowNotFoundException as exc:
            raise AirflowFailException(f"effopt keeps the GPU pools over the REST API, but {exc}") from exc
        plan = plan_pools(inventory, settings.gpu_pool_unit, settings.gpu_quotas, existing)
        for change in plan:
            if not change.changes:
                continue
            if not dry_run:
                try:
                    self._apply(api, change)
                except AirflowApiError as exc:
                    if exc.status in (403,):
                        raise AirflowFailException(
                            f"pool {change.pool}: {exc} (the API user needs the Op role)") from exc
                    raise
        now = time.time()
        store = get_store()
        store.save_gpu_inventory(now, inventory.source, inventory.gpu_count, inventory.to_dict())
        dag_id, run_id = self.dag_id, str(context.get("run_id", ""))
        store.record_gpu_pool_changes(
            {"changed_at": now, "dag_id": dag_id, "run_id": run_id, "pool": c.pool, "action": c.action,
             "slots_before": c.slots_before, "slots_after": c.slots_after, "occupied": c.occupied,
             "reason": c.reason, "dry_run": dry_run} for c in plan if c.changes)
        verb = "would" if dry_run else "did"
        for c in plan:
            level = self.log.warning if c.action in ("shrink-occupied", "empty-occupied") else self.log.info
            level("pool %s: %s%s (%s -> %s slots; %s)", c.pool, "" if not c.changes else f"{verb} ", c.action,
                  c.slots_before, c.slots_after, c.reason)
        if inventory.empty:
            self.log.info("effopt: no GPUs in the inventory (%s); GPU pools were left as they are. Set [effopt] "
                          "gpu_inventory (and gpu_inventory_file for static) to describe your GPUs.", inventory.detail)
        pools = {name: p.get("slots") for name, p in sorted(existing.items())}
        if not dry_run:
            pools = {name: p.get("slots") for name, p in sorted(api.pools().items())}
        return {"inventory": inventory.describe(), "source": inventory.source, "detail": inventory.detail,
                "gpus": inventory.gpu_count, "unit": settings.gpu_pool_unit, "dry_run": dry_run,
                "changes": [c.to_dict() for c in plan], "pools": pools}

    @staticmethod
    def _apply(api: Any, change: Any) -> None:
        from effopt.hooks.airflow_api import AirflowApiError

        if change.action == "create":
            try:
                api.create_pool(change.pool, change.slots_after, change.description)
            except AirflowApiError as exc:
                if exc.status != 409:
                    raise
                api.update_pool(change.pool, slots=change.slots_after, description=change.description)
        elif change.action in ("update", "shrink-occupied", "empty-occupied"):
            api.update_pool(change.pool, slots=change.slots_after, description=change.description)
        elif change.action == "delete":
            try:
                api.delete_pool(change.pool)
            except AirflowApiError as exc:
                if exc.status != 404:
                    raise
