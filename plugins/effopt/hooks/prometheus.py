"""The ``effopt_prometheus`` connection as a :class:`~effopt.metrics.prometheus.PrometheusSource`."""

from __future__ import annotations

import base64
from typing import Any

from airflow.sdk import BaseHook


def prometheus_url(conn: Any) -> str:
    """Base URL of a Prometheus connection (``http://host:9090[/path]``).

    TLS when the connection type is ``https`` or the ``ssl`` extra is true;
    a path prefix (Prometheus behind a proxy) from the schema.
    """
    if not conn.host:
        raise ValueError(f"connection {conn.conn_id!r} has no host")
    extra = conn.extra_dejson or {}
    if conn.host.startswith(("http://", "https://")):
        base = conn.host.rstrip("/")
    else:
        tls = conn.conn_type == "https" or str(extra.get("ssl", "")).lower() in ("1", "true", "yes")
        port = f":{conn.port}" if conn.port else ""
        base = f"{'https' if tls else 'http'}://{conn.host}{port}"
    prefix = (conn.schema or "").strip("/")
    return f"{base}/{prefix}" if prefix else base


class PrometheusHook(BaseHook):
    """Prometheus from an Airflow connection: login/password for basic auth or a ``bearer_token`` extra."""

    conn_name_attr = "prometheus_conn_id"
    default_conn_name = "effopt_prometheus"
    conn_type = "http"
    hook_name = "effopt Prometheus"

    def __init__(self, prometheus_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.prometheus_conn_id = prometheus_conn_id

    def get_source(self, **kwargs: Any):
        from effopt.metrics.prometheus import PrometheusSource

        conn = self.get_connection(self.prometheus_conn_id)
        headers: dict[str, str] = {}
        token = (conn.extra_dejson or {}).get("bearer_token")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif conn.login:
            raw = f"{conn.login}:{conn.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        return PrometheusSource(prometheus_url(conn), headers=headers or None, **kwargs)
