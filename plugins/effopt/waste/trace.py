"""Workloads for the waste analysis from trace files laid out like ``alibaba-genai-2026``.

The trace gives memory as a fraction of the container's limit and no
requests, GPU counts or GPU models.  What the analysis needs beyond the
data is an explicit :class:`TraceAssumptions`, printed with every report:

* memory limit in bytes (``memory_limit_bytes``): usage bytes = fraction x
  limit; the request is taken equal to the limit (Guaranteed QoS, as
  serving pods usually run);
* each container with GPU series holds ``gpu_count`` GPUs of ``gpu_model``
  (priced from the rate table; a model the table lacks is reported missing).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from effopt.metrics.series import MetricsSource, ResourceKind, UsageSeries
from effopt.metrics.trace import TraceSource
from effopt.waste.report import WorkloadUsage, group_series

GIB = 1024**3


@dataclass(frozen=True)
class TraceAssumptions:
    memory_limit_bytes: float = 16 * GIB
    gpu_model: str = "A100"
    gpu_count: float = 1.0

    def describe(self) -> list[str]:
        return [
            f"memory: the trace gives usage as a fraction of the limit; limit = request = "
            f"{self.memory_limit_bytes / GIB:g} GiB per container (--memory-limit-gib)",
            f"GPUs: each container with GPU series holds {self.gpu_count:g} x {self.gpu_model} "
            "(--gpu-model, --gpu-count), priced from the rate table",
            "costs: OpenCost max(request, usage) x unit price, averaged over the trace and scaled to a month",
        ]


def to_bytes(series: UsageSeries, limit_bytes: float) -> UsageSeries:
    """A memory series given as a fraction of the limit, in bytes, with request = limit = ``limit_bytes``."""
    if series.unit == "bytes":
        return series
    if series.unit != "fraction":
        raise ValueError(f"{series.workload}/{series.container}: cannot convert memory in {series.unit!r} to bytes")
    if not limit_bytes > 0:
        raise ValueError(f"memory limit must be positive bytes, got {limit_bytes!r}")
    return replace(series, unit="bytes", values=series.values * limit_bytes, request=float(limit_bytes),
                   limit=float(limit_bytes))


def workloads_from_source(source: MetricsSource, assumptions: TraceAssumptions | None = None,
                          what: str = "the source") -> list[WorkloadUsage]:
    """One :class:`WorkloadUsage` per container of any metrics source (trace files, Prometheus, Airflow tasks).

    Memory given as a fraction of the limit (traces) becomes bytes with the
    assumed limit; sources in bytes keep their own requests and limits.
    """
    a = assumptions or TraceAssumptions()
    kinds: tuple[ResourceKind, ...] = source.resources()
    if not kinds:
        raise FileNotFoundError(f"no usage series with a known metric in {what}")
    series: list[UsageSeries] = []
    for kind in kinds:
        for s in source.series(kind):
            series.append(to_bytes(s, a.memory_limit_bytes) if kind == "memory" else s)
    return group_series(series, gpu_model=a.gpu_model, gpu_count=a.gpu_count)


def workloads_from_trace(path: str | Path, assumptions: TraceAssumptions | None = None) -> list[WorkloadUsage]:
    """One :class:`WorkloadUsage` per container of the trace files in ``path``."""
    return workloads_from_source(TraceSource(path), assumptions, what=str(path))
