"""The metrics source a DAG's params name, built from Airflow connections and the effopt store."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

SOURCES = ("prometheus", "airflow", "trace")


def metrics_source(
    source: str,
    *,
    path: str = "",
    prometheus_conn_id: str = "",
    selector: str = "",
    window_hours: float = 7 * 24,
    dag_ids: Sequence[str] | None = None,
) -> Any:
    """``prometheus`` (the connection, default ``[effopt] prometheus_conn_id``; ``selector`` label matchers;
    the last ``window_hours``), ``airflow`` (the task-usage records of ``dag_ids``, all DAGs when empty)
    or ``trace`` (CSV files at ``path``)."""
    if source == "prometheus":
        from effopt.airflow_settings import get_settings
        from effopt.hooks.prometheus import PrometheusHook

        end = time.time()
        hook = PrometheusHook(prometheus_conn_id or get_settings().prometheus_conn_id)
        return hook.get_source(start=end - float(window_hours) * 3600, end=end, selector=selector or "")
    if source == "airflow":
        from effopt.airflow_settings import get_store
        from effopt.metrics.airflow_tasks import AirflowTaskSource

        return AirflowTaskSource(get_store(), dag_ids=dag_ids or None)
    if source == "trace":
        from effopt.metrics.trace import TraceSource

        if not path:
            raise ValueError("source 'trace' needs path: a trace file or directory (DAG param 'path')")
        return TraceSource(path)
    raise ValueError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
