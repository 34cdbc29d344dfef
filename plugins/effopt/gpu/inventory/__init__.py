"""Which GPUs exist: one interface (:class:`InventorySource`), four sources.

* ``nvml``: this host's GPUs through the NVIDIA driver (:class:`NvmlInventory`);
* ``kubernetes``: nodes' ``nvidia.com/gpu`` and MIG resources and the pods asking for them
  (:class:`KubernetesInventory`, given a ``kubernetes.client.ApiClient``);
* ``prometheus``: DCGM exporter metrics (:class:`PrometheusInventory`, given a Prometheus client);
* ``static``: a YAML file or a CSV node list (:class:`StaticInventory`); no file: no GPUs.

:func:`read_auto` is ``[effopt] gpu_inventory = auto``: NVML when a driver answers, else the static file.
Plain Python: the Airflow layer builds the clients and passes them in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effopt.gpu.inventory.base import (
    GpuDevice,
    Inventory,
    InventoryError,
    InventoryNode,
    InventorySource,
    InventoryUnavailable,
    MigSlice,
    RunningRequest,
    mig_model,
    normalize_model,
)
from effopt.gpu.inventory.kubernetes import KubernetesInventory
from effopt.gpu.inventory.nvml import NvmlInventory
from effopt.gpu.inventory.prometheus import PrometheusInventory
from effopt.gpu.inventory.static import StaticInventory

KINDS = ("auto", "static", "nvml", "kubernetes", "prometheus")


def read_auto(static_file: str | Path | None, nvml: Any = None) -> Inventory:
    """NVML when a driver answers on this host, else the static file (its detail says why)."""
    try:
        inventory = NvmlInventory(nvml).read()
    except InventoryUnavailable as exc:
        if exc.transient:
            raise
        static = StaticInventory(static_file).read()
        return Inventory(static.nodes, "static", f"auto: {exc}; so the static inventory ({static.detail})",
                         static.taken_at)
    return Inventory(inventory.nodes, "nvml", f"auto: {inventory.detail}", inventory.taken_at)


__all__ = ["KINDS", "GpuDevice", "Inventory", "InventoryError", "InventoryNode", "InventorySource",
           "InventoryUnavailable", "KubernetesInventory", "MigSlice", "NvmlInventory", "PrometheusInventory",
           "RunningRequest",
           "StaticInventory", "mig_model", "normalize_model", "read_auto"]
