"""Waste detection priced in real money (plain Python, no Airflow import).

* :mod:`effopt.waste.detectors`: one pure function per kind of waste
  (over_provisioned, idle, idle_gpu, scaling_churn, memory_leak,
  cache_inefficiency, cost_anomaly), each returning typed findings;
* :mod:`effopt.waste.cost`: the OpenCost-style cost model;
* :mod:`effopt.waste.report`: :func:`analyze` and the :class:`WasteReport`
  (totals, top wasters, trend, JSON and CSV);
* :mod:`effopt.waste.trace`: workloads from trace files (Alibaba GenAI layout).
"""

from effopt.waste.cost import ResourceCost, UnitPrice, daily_costs, resource_cost, unit_price
from effopt.waste.detectors import (
    GAP_THRESHOLDS,
    ReplicaSeries,
    cache_inefficiency,
    cost_anomaly,
    idle,
    idle_gpu,
    memory_leak,
    over_provisioned,
    scaling_churn,
    troughs,
)
from effopt.waste.model import KINDS, Advice, Finding, Kind, Severity
from effopt.waste.report import WasteReport, WasteSettings, WorkloadUsage, analyze, analyze_workload, group_series
from effopt.waste.stats import mad, mann_kendall, theil_sen
from effopt.waste.trace import TraceAssumptions, workloads_from_trace

__all__ = [
    "GAP_THRESHOLDS", "KINDS", "Advice", "Finding", "Kind", "ReplicaSeries", "ResourceCost", "Severity",
    "TraceAssumptions", "UnitPrice", "WasteReport", "WasteSettings", "WorkloadUsage", "analyze", "analyze_workload",
    "cache_inefficiency", "cost_anomaly", "daily_costs", "group_series", "idle", "idle_gpu", "mad", "mann_kendall",
    "memory_leak", "over_provisioned", "resource_cost", "scaling_churn", "theil_sen", "troughs", "unit_price",
    "workloads_from_trace",
]
