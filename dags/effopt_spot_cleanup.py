"""effopt_spot_cleanup: hourly, terminate effopt-launched instances that no running task owns."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param

from effopt.operators.spot import SpotCleanupOperator

DOC = """
### effopt spot cleanup

Every hour, lists the EC2 instances tagged `effopt:managed=true` (through
`[effopt] aws_conn_id`) and reads, over the Airflow REST API (`[effopt]
airflow_api_conn_id`), the state of the task try that launched each. An
instance is kept while its DAG run runs and its task is at that try and
running, deferred or done (it handed the instances on); otherwise it is an
orphan and is terminated: the run ended or is gone, the task failed or is up
for retry, or a later try started (a crash between the launch and the XCom
leaves exactly that). Instances younger than `min_age_minutes` are left alone.

`dry_run` lists the orphans and terminates nothing. The XCom is the report:
`{"seen", "kept", "orphans": [{"instance_id", "reason", "owner", ...}],
"terminated", "errors", "recorded_gone", "summary"}`; the effopt page shows
what was terminated. Without the AWS connection there is nothing to clean up,
and the run says so and succeeds.
"""

with DAG(
    dag_id="effopt_spot_cleanup",
    schedule="@hourly",
    catchup=False,
    max_active_runs=1,
    tags=["effopt", "spot", "maintenance"],
    doc_md=DOC,
    default_args={"owner": "effopt", "retries": 2, "retry_delay": timedelta(minutes=2)},
    params={
        "dry_run": Param(False, type="boolean", description="list the orphans, terminate nothing"),
        "min_age_minutes": Param(10, type="number", minimum=0, description="leave younger instances alone"),
        "dag_ids": Param([], type="array", description="only these DAGs' instances (empty: all)"),
        "aws_conn_id": Param("", type="string", description="empty: [effopt] aws_conn_id"),
    },
    render_template_as_native_obj=True,
):
    SpotCleanupOperator(task_id="cleanup", dry_run="{{ params.dry_run }}",
                        min_age_minutes="{{ params.min_age_minutes }}", dag_ids="{{ params.dag_ids }}",
                        aws_conn_id="{{ params.aws_conn_id }}")
