"""GPUs as the NVIDIA DCGM exporter reports them to Prometheus.

Instant queries of ``DCGM_FI_DEV_FB_FREE``, ``DCGM_FI_DEV_FB_USED`` (frame buffer, MiB) and
``DCGM_FI_DEV_GPU_UTIL`` (percent), through any client with ``query(promql) -> [{"metric": {...}, "value": [t,
v]}]`` (the Airflow layer passes a :class:`~effopt.metrics.prometheus.PrometheusSource` of ``effopt_prometheus``).
Labels: ``Hostname`` (the node), ``gpu`` (device index), ``UUID``, ``modelName``; a series with
``GPU_I_PROFILE`` is a MIG slice (``GPU_I_ID`` its instance) of that GPU. Memory total is free + used.
"""

from __future__ import annotations

from typing import Any

from effopt.gpu.inventory.base import (
    GpuDevice,
    Inventory,
    InventoryError,
    InventoryNode,
    InventorySource,
    InventoryUnavailable,
    MigSlice,
    normalize_model,
)

METRICS = ("DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_UTIL")


class PrometheusInventory(InventorySource):
    kind = "prometheus"

    def __init__(self, client: Any, selector: str = "") -> None:
        self.client = client
        self.selector = selector.strip().strip("{}").strip(",")

    def _query(self, metric: str) -> list[dict[str, Any]]:
        promql = f"{metric}{{{self.selector}}}" if self.selector else metric
        try:
            return self.client.query(promql)
        except Exception as exc:  # noqa: BLE001 - any client error: the source did not answer
            raise InventoryUnavailable(f"DCGM metrics unavailable: {exc}",
                                       transient=bool(getattr(exc, "transient", True))) from exc

    def read(self) -> Inventory:
        values: dict[str, dict[tuple[str, int, str], float]] = {}
        labels: dict[tuple[str, int, str], dict[str, str]] = {}
        for metric in METRICS:
            values[metric] = {}
            for series in self._query(metric):
                m = series.get("metric") or {}
                host = m.get("Hostname") or m.get("kubernetes_node") or m.get("instance")
                if not host or "gpu" not in m:
                    raise InventoryError(f"{metric} series {m} lacks the Hostname or gpu label")
                try:
                    key = (host, int(m["gpu"]), m.get("GPU_I_ID", ""))
                    value = float(series["value"][1])
                except (KeyError, ValueError, IndexError, TypeError):
                    raise InventoryError(f"{metric} series {m} has no numeric value or gpu index") from None
                values[metric][key] = value
                labels.setdefault(key, m)
        hosts: dict[str, tuple[dict[int, GpuDevice], list[MigSlice]]] = {}
        free, used, util = (values[m] for m in METRICS)
        for key in sorted(set(free) | set(used)):
            host, index, instance = key
            m = labels[key]
            gpus, slices = hosts.setdefault(host, ({}, []))
            total = int(free.get(key, 0) + used.get(key, 0))
            if m.get("GPU_I_PROFILE") or instance:
                slices.append(MigSlice(m.get("GPU_I_PROFILE") or f"instance-{instance}", index, m.get("UUID", ""),
                                       total))
                parent = gpus.get(index)
                model = normalize_model(m.get("modelName") or "unlabelled")
                gpus[index] = GpuDevice(index, model, m.get("UUID", ""), parent.memory_total_mib if parent else 0,
                                        parent.memory_used_mib if parent else None,
                                        parent.utilization_pct if parent else None, mig_enabled=True)
                continue
            prior = gpus.get(index)
            gpus[index] = GpuDevice(index, normalize_model(m.get("modelName") or "unlabelled"), m.get("UUID", ""),
                                    total, int(used[key]) if key in used else None, util.get(key),
                                    mig_enabled=bool(prior and prior.mig_enabled))
        nodes = [InventoryNode(host, tuple(g for _, g in sorted(gpus.items())), tuple(slices))
                 for host, (gpus, slices) in sorted(hosts.items())]
        detail = f"DCGM exporter metrics of {len(nodes)} host(s)" if nodes else "no DCGM_FI_DEV_FB_FREE series"
        return Inventory.of(nodes, self.kind, detail)
