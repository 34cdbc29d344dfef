"""Metrics sources: per-workload, per-container usage series with data-quality reports.

Plain Python (no Airflow import); :class:`PrometheusSource` speaks HTTP to a
Prometheus base URL directly, so an Airflow connection only has to supply
that URL (and headers).
"""

from effopt.metrics.airflow_tasks import AirflowTaskSource
from effopt.metrics.prometheus import PrometheusError, PrometheusSource
from effopt.metrics.series import (
    RESOURCES,
    UNITS,
    MetricsSource,
    QualityReport,
    ResourceKind,
    UsageSeries,
    clean_series,
    make_series,
)
from effopt.metrics.trace import TraceSource

__all__ = [
    "RESOURCES", "UNITS", "AirflowTaskSource", "MetricsSource", "PrometheusError", "PrometheusSource",
    "QualityReport", "ResourceKind", "TraceSource", "UsageSeries", "clean_series", "make_series",
]
