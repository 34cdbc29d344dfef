"""effopt_rightsizing: hourly CPU and memory recommendations, planned with guardrails and prices."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param

from effopt.airflow_settings import get_settings
from effopt.hooks.metrics import SOURCES
from effopt.operators.rightsizing import MODES, RightSizingApplyOperator, RightSizingRecommendOperator
from effopt.rightsizing import recommender_names  # the package registers every recommender

DOC = """
### effopt right-sizing

Hourly (`[effopt] rightsizing_schedule`), `recommend` reads usage history from the chosen source, recommends CPU and
memory requests (and memory limits) per container with the chosen recommender,
and plans the changes: guardrails (bounds, max step, memory never below the
observed peak, cooldown) and the monthly cost delta from the `[effopt]
rate_table`. `apply` then acts in the chosen mode; the default `dry-run`
changes nothing. Both push JSON to XCom.

Sources: `auto` (the default: `trace` when `trace_path` is given, else `prometheus` when its connection is
defined, else `airflow`, so a fresh
install plans from the Airflow tasks' own usage and says when there are not enough samples yet),
`prometheus` (connection `[effopt] prometheus_conn_id`, `effopt_prometheus` by default, or the param
`prometheus_conn_id`; define it with e.g. `AIRFLOW_CONN_EFFOPT_PROMETHEUS='http://prometheus:9090'`),
`airflow` (the task-usage listener's records of `dag_ids`), `trace` (CSV files at `trace_path`).
A configuration error (a missing connection or path) fails the run at once; only transient errors retry.
Modes: `dry-run`, `patch` (Kubernetes, via `[effopt] kubernetes_conn_id` or the param), `vpa` and
`gitops` (files in `output_dir`), `airflow` (KubernetesPodOperator resources).

Trigger with `conf`, e.g.
`{"source": "prometheus", "selector": "namespace=\\"ml\\"", "mode": "dry-run", "recommender": "effopt"}`.
"""

with DAG(
    dag_id="effopt_rightsizing",
    schedule=get_settings().rightsizing_schedule,
    catchup=False,
    max_active_runs=1,
    tags=["effopt", "rightsizing"],
    doc_md=DOC,
    default_args={"owner": "effopt", "retries": 1, "retry_delay": timedelta(minutes=5)},
    params={
        "source": Param("auto", enum=list(SOURCES)),
        "selector": Param("", type="string", description="PromQL label matchers, e.g. namespace=\"ml\""),
        "dag_ids": Param([], type="array", description="DAGs whose tasks to size (source airflow)"),
        "trace_path": Param("", type="string"),
        "prometheus_conn_id": Param("", type="string", description="empty: [effopt] prometheus_conn_id"),
        "kubernetes_conn_id": Param("", type="string", description="mode patch; empty: [effopt] kubernetes_conn_id"),
        "window_hours": Param(192, type="number", minimum=1),
        "recommender": Param("effopt", enum=recommender_names()),
        "recommender_settings": Param({}, type="object",
                                      description="recommender settings, e.g. {\"target_overrun_rate\": 0.01}; "
                                                  "effopt rightsize settings lists them"),
        "mode": Param("dry-run", enum=list(MODES)),
        "output_dir": Param("", type="string", description="where vpa/gitops files go"),
    },
    render_template_as_native_obj=True,
):
    recommend = RightSizingRecommendOperator(
        task_id="recommend",
        source="{{ params.source }}",
        selector="{{ params.selector }}",
        dag_ids="{{ params.dag_ids }}",
        trace_path="{{ params.trace_path }}",
        prometheus_conn_id="{{ params.prometheus_conn_id }}",
        window_hours="{{ params.window_hours }}",
        recommender="{{ params.recommender }}",
        recommender_settings="{{ params.recommender_settings }}",
    )
    RightSizingApplyOperator(
        task_id="apply",
        recommendation=recommend.output,
        mode="{{ params.mode }}",
        kubernetes_conn_id="{{ params.kubernetes_conn_id }}",
        output_dir="{{ params.output_dir }}",
    )
