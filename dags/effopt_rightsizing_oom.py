"""effopt_rightsizing_oom: OOM-killed containers get more memory in minutes, not at the next hourly run."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param

from effopt.operators.rightsizing import MODES, OomReplanOperator, RightSizingApplyOperator
from effopt.sensors.oom import OomKillSensor

DOC = """
### effopt right-sizing after OOM kills

`wait_for_oom` waits in the triggerer (no worker slot held) until a container
matching `selector` is OOM-killed, as kube-state-metrics reports it through the
Prometheus connection (`[effopt] prometheus_conn_id`, `effopt_prometheus` by
default). `replan` then gives each killed container VPA's bump-up,
max(used + 100 MiB, used x 1.2) of the larger of its peak usage, request and
limit, under the same guardrails and audit as `effopt_rightsizing`, and
`apply` acts in the chosen `mode` (`dry-run` by default).

Each hourly run waits up to `wait_minutes`; without a Prometheus connection
there is nothing to watch and the run says so and succeeds.
"""

with DAG(
    dag_id="effopt_rightsizing_oom",
    schedule="@hourly",
    catchup=False,
    max_active_runs=1,
    tags=["effopt", "rightsizing"],
    doc_md=DOC,
    default_args={"owner": "effopt", "retries": 1, "retry_delay": timedelta(minutes=1)},
    params={
        "selector": Param("", type="string", description='PromQL label matchers, e.g. namespace="ml"'),
        "prometheus_conn_id": Param("", type="string", description="empty: [effopt] prometheus_conn_id"),
        "kubernetes_conn_id": Param("", type="string", description="mode patch; empty: [effopt] kubernetes_conn_id"),
        "wait_minutes": Param(55, type="number", minimum=1, description="how long one run waits for an OOM kill"),
        "poll_seconds": Param(30, type="number", minimum=1, description="how often Prometheus is asked"),
        "mode": Param("dry-run", enum=list(MODES)),
        "output_dir": Param("", type="string", description="where vpa/gitops files go"),
    },
    render_template_as_native_obj=True,
):
    wait = OomKillSensor(
        task_id="wait_for_oom",
        selector="{{ params.selector }}",
        prometheus_conn_id="{{ params.prometheus_conn_id }}",
        poll_interval_s="{{ params.poll_seconds }}",
        wait_s="{{ params.wait_minutes * 60 }}",
        soft_fail=True,
    )
    replan = OomReplanOperator(task_id="replan", kills=wait.output,
                               prometheus_conn_id="{{ params.prometheus_conn_id }}",
                               kubernetes_conn_id="{{ params.kubernetes_conn_id }}")
    RightSizingApplyOperator(
        task_id="apply",
        recommendation=replan.output,
        mode="{{ params.mode }}",
        kubernetes_conn_id="{{ params.kubernetes_conn_id }}",
        output_dir="{{ params.output_dir }}",
    )
