"""effopt_waste_report: weekly waste report, priced and emailed."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param

from effopt.airflow_settings import get_settings
from effopt.hooks.metrics import SOURCES
from effopt.operators.waste import WasteDetectionOperator, WasteReportEmailOperator

DOC = """
### effopt waste report

Every Monday at 07:00 UTC (`[effopt] waste_report_schedule`), `detect` finds over-provisioned, idle and
leaking containers, idle GPUs, scaling churn and cost anomalies in the usage
data, prices them with the `[effopt] rate_table` (OpenCost: max(request, usage)
x price; missing prices are listed, never counted as zero), compares with the
previous report, and renders the HTML email with charts; the report is kept
in the effopt store and shown on the effopt page (`/effopt/`). `email` mails it
through the `smtp_default` connection to `recipients` (or `[effopt]
report_recipients`), once per report period: a retried task does not send a
second copy once the server accepted one. Without recipients or without the
connection the run still succeeds: the `email` task's log and XCom say what
to set (`AIRFLOW_CONN_SMTP_DEFAULT`, `AIRFLOW__EFFOPT__REPORT_RECIPIENTS`).

Params (trigger with `conf` to override): `recipients` (list of addresses),
`source` (`auto`, the default: the trace at `path` when one is given, else
Prometheus when `effopt_prometheus` is defined, else the Airflow tasks' own
usage records; `prometheus` with `selector` over
the last `window_hours`; `airflow`: the task-usage records of `dag_ids`;
`trace`), `path` (trace directory laid out like `alibaba-genai-2026`),
`memory_limit_gib` and `gpu_model` (what the trace's containers were given),
`rate_table`, `pricing` (`on_demand` or `spot`), `period` (the period the
email is sent once for; default: the run's date).

The summary (totals, waste by kind, findings) is the `detect` task's XCom.
"""

with DAG(
    dag_id="effopt_waste_report",
    schedule=get_settings().waste_report_schedule,
    catchup=False,
    max_active_runs=1,
    tags=["effopt", "waste", "report"],
    doc_md=DOC,
    default_args={"owner": "effopt", "retries": 2, "retry_delay": timedelta(minutes=5)},
    params={
        "recipients": Param([], type="array", description="email addresses of the report"),
        "source": Param("auto", enum=list(SOURCES)),
        "path": Param("", type="string", description="usage trace directory (source trace)"),
        "selector": Param("", type="string", description="PromQL label matchers (source prometheus)"),
        "dag_ids": Param([], type="array", description="DAGs whose tasks to analyse (source airflow)"),
        "window_hours": Param(168, type="number", minimum=1),
        "memory_limit_gib": Param(16, type="number", exclusiveMinimum=0),
        "gpu_model": Param("A100", type="string"),
        "rate_table": Param("", type="string", description="rate table JSON (empty: [effopt] rate_table)"),
        "pricing": Param("on_demand", enum=["on_demand", "spot"]),
        "period": Param("", type="string",
                        description="report period the email is sent once for (default: the run's date)"),
    },
    render_template_as_native_obj=True,
):
    detect = WasteDetectionOperator(
        task_id="detect",
        source="{{ params.source }}",
        path="{{ params.path }}",
        selector="{{ params.selector }}",
        dag_ids="{{ params.dag_ids }}",
        window_hours="{{ params.window_hours }}",
        memory_limit_gib="{{ params.memory_limit_gib }}",
        gpu_model="{{ params.gpu_model }}",
        rate_table="{{ params.rate_table }}",
        pricing="{{ params.pricing }}",
    )
    WasteReportEmailOperator(
        task_id="email",
        report=detect.output,
        recipients="{{ params.recipients }}",
        # run_after exists for every run; data_interval_end is undefined when triggered with logical_date null.
        subject="effopt waste report {{ params.period or dag_run.run_after.strftime('%Y-%m-%d') }}",
        period_key="{{ params.period or dag_run.run_after.strftime('%Y-%m-%d') }}",
        retry_delay=timedelta(seconds=30),
    )
