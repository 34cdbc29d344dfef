"""The metrics source a DAG's params name, built from Airflow connections and the effopt store."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from effopt.operators.errors import missing_connection

SOURCES = ("auto", "prometheus", "airflow", "trace")


def connection_defined(conn_id: str) -> bool:
    """Whether Airflow knows connection ``conn_id`` (environment, secrets backend or database)."""
    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


def resolve_source(source: str, prometheus_conn_id: str = "", path: str = "") -> tuple[str, str]:
    """``auto`` becomes ``trace`` when a trace ``path`` is given, else ``prometheus`` when its connection is
    defined, else ``airflow`` (the task-usage records); returns (source, why) with the reason for the log."""
    if source != "auto":
        return source, f"source {source!r} as asked"
    if path:
        return "trace", f"source auto: a trace path is given, so the trace at {path}"
    from effopt.airflow_settings import get_settings

    conn_id = prometheus_conn_id or get_settings().prometheus_conn_id
    if connection_defined(conn_id):
        return "prometheus", f"source auto: connection {conn_id!r} is defined, so Prometheus"
    return "airflow", (f"source auto: connection {conn_id!r} is not defined, so the Airflow tasks' own usage "
                       "records (define it to size Kubernetes workloads from Prometheus)")


def metrics_source(
    source: str,
    *,
    path: str = "",
    prometheus_conn_id: str = "",
    selector: str = "",
    window_hours: float = 7 * 24,
    dag_ids: Sequence[str] | None = None,
    path_param: str = "path",
) -> Any:
    """``prometheus`` (the connection, default ``[effopt] prometheus_conn_id``; ``selector`` label matchers;
    the last ``window_hours``), ``airflow`` (the task-usage records of ``dag_ids``, all DAGs when empty)
    or ``trace`` (CSV files at ``path``); ``auto`` is resolved first (:func:`resolve_source`)."""
    source, _ = resolve_source(source, prometheus_conn_id, path)
    if source == "prometheus":
        from effopt.airflow_settings import get_settings
        from effopt.hooks.prometheus import PrometheusHook

        conn_id = prometheus_conn_id or get_settings().prometheus_conn_id
        if not connection_defined(conn_id):
            raise AirflowNotFoundException(missing_connection(
                conn_id, what="Prometheus", example="http://prometheus:9090", param="prometheus_conn_id"))
        end = time.time()
        hook = PrometheusHook(conn_id)
        return hook.get_source(start=end - float(window_hours) * 3600, end=end, selector=selector or "")
    if source == "airflow":
        from effopt.airflow_settings import get_store
        from effopt.metrics.airflow_tasks import AirflowTaskSource

        return AirflowTaskSource(get_store(), dag_ids=dag_ids or None)
    if source == "trace":
        from effopt.metrics.trace import TraceSource

        if not path:
            raise ValueError(f"source 'trace' needs a trace file or directory: set the DAG param {path_param!r}")
        return TraceSource(path)
    raise ValueError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
