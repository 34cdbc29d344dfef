"""effopt_spot_example: a job on spot capacity from placement to cleanup, relaunched elsewhere if interrupted."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param, task

from effopt.operators.spot import SpotFleetOperator, SpotPlacementOperator, SpotReleaseOperator
from effopt.sensors.spot import SpotInterruptionSensor

DOC = """
### effopt spot example

A job of `hours` of work that must end within `deadline_hours`, checkpointing
every `checkpoint_hours`, on spot capacity:

1. `place` chooses the offerings (instance type, AZ ID, capacity type) by
   expected cost per useful hour, restarts included (`[effopt]
   spot_price_source`: the embedded snapshot, or live EC2 prices);
2. `fleet` launches them with one EC2 CreateFleet (`instant`) per step, its
   `ClientToken` derived from the try, every instance tagged with its owner;
   capacity errors fall through to the next pools, then on-demand;
3. `work` waits for the instances to run (the launch template's user data
   runs the job and writes its checkpoints);
4. `watch` waits in the triggerer for an interruption notice or a rebalance
   recommendation, from the SQS queue `sqs_queue_url` that an EventBridge rule
   feeds; if the instances finish first, the rest is skipped;
5. on a notice, `checkpoint` works out what is left from the last
   checkpoint, `replace` places it again with the interrupted pool excluded
   (on-demand when a spot restart no longer fits the deadline), `relaunch`
   launches it, `resume` waits for it to run and `watch_again` for the job to
   end (a second interruption is recorded; this example relaunches once);
6. `cleanup` (the run's teardown) terminates the run's instances, whatever
   happened; the hourly `effopt_spot_cleanup` DAG catches anything else.

Without the AWS connection (`[effopt] aws_conn_id`, `aws_default`) only
`place` runs; the rest is skipped and says which connection to define.
"""

with DAG(
    dag_id="effopt_spot_example",
    schedule=None,
    catchup=False,
    tags=["effopt", "spot"],
    doc_md=DOC,
    default_args={"owner": "effopt", "retries": 1, "retry_delay": timedelta(minutes=1)},
    params={
        "hours": Param(1.0, type="number", exclusiveMinimum=0, description="hours of work"),
        "deadline_hours": Param(3.0, type=["null", "number"], description="finish within (empty: no deadline)"),
        "checkpoint_hours": Param(0.25, type="number", minimum=0, description="checkpoint interval (0: continuous)"),
        "vcpus": Param(2, type="number", minimum=0),
        "memory_gib": Param(4, type="number", minimum=0),
        "count": Param(1, type="integer", minimum=1, description="instances"),
        "regions": Param([], type="array", description="empty: the AWS connection's region"),
        "launch_template": Param("effopt-spot", type="string", description="launch template name or lt- id"),
        "subnet_ids": Param([], type="array", description="subnets to launch in (empty: default subnets)"),
        "sqs_queue_url": Param("", type="string", description="SQS queue of the EventBridge EC2 spot events"),
        "work_minutes": Param(10, type="number", exclusiveMinimum=0, description="how long watch waits"),
        "poll_seconds": Param(5, type="number", minimum=1, description="how often watch looks"),
        "aws_conn_id": Param("", type="string", description="empty: [effopt] aws_conn_id"),
    },
    render_template_as_native_obj=True,
):
    place = SpotPlacementOperator(
        task_id="place", hours="{{ params.hours }}", deadline_hours="{{ params.deadline_hours }}",
        checkpoint_hours="{{ params.checkpoint_hours }}", vcpus="{{ params.vcpus }}",
        memory_gib="{{ params.memory_gib }}", regions="{{ params.regions }}", aws_conn_id="{{ params.aws_conn_id }}")
    fleet = SpotFleetOperator(
        task_id="fleet", placement=place.output, launch_template="{{ params.launch_template }}",
        count="{{ params.count }}", subnet_ids="{{ params.subnet_ids }}", aws_conn_id="{{ params.aws_conn_id }}")

    @task(multiple_outputs=False)
    def work(fleet: dict, params: dict | None = None) -> dict:
        from effopt.operators.spot import wait_until_running

        return wait_until_running(fleet, (params or {}).get("aws_conn_id", ""))

    watch = SpotInterruptionSensor(
        task_id="watch", source="sqs", instances=fleet.output, queue_url="{{ params.sqs_queue_url }}",
        wait_s="{{ params.work_minutes * 60 }}", poll_interval_s="{{ params.poll_seconds }}",
        aws_conn_id="{{ params.aws_conn_id }}", soft_fail=True)

    @task(multiple_outputs=True)
    def checkpoint(notice: dict, fleet: dict, params: dict | None = None) -> dict:
        from effopt.operators.spot import remaining_work

        p = params or {}
        deadline = p.get("deadline_hours")
        return remaining_work(fleet, notice, hours=float(p["hours"]), checkpoint_hours=float(p["checkpoint_hours"]),
                              deadline_hours=None if deadline in (None, "") else float(deadline))

    left = checkpoint(watch.output, fleet.output)
    replace = SpotPlacementOperator(
        task_id="replace", hours=left["hours"], deadline_hours=left["deadline_hours"],
        capacity_types=left["capacity_types"], checkpoint_hours="{{ params.checkpoint_hours }}",
        vcpus="{{ params.vcpus }}", memory_gib="{{ params.memory_gib }}", regions="{{ params.regions }}",
        exclude=watch.output, aws_conn_id="{{ params.aws_conn_id }}")
    relaunch = SpotFleetOperator(
        task_id="relaunch", placement=replace.output, launch_template="{{ params.launch_template }}",
        count="{{ params.count }}", subnet_ids="{{ params.subnet_ids }}", aws_conn_id="{{ params.aws_conn_id }}")
    resume = work.override(task_id="resume")(relaunch.output)
    watch_again = SpotInterruptionSensor(
        task_id="watch_again", source="sqs", instances=relaunch.output, queue_url="{{ params.sqs_queue_url }}",
        wait_s="{{ params.work_minutes * 60 }}", poll_interval_s="{{ params.poll_seconds }}",
        aws_conn_id="{{ params.aws_conn_id }}", soft_fail=True)
    cleanup = SpotReleaseOperator(task_id="cleanup", aws_conn_id="{{ params.aws_conn_id }}").as_teardown(
        setups=[fleet, relaunch])

    work(fleet.output) >> watch
    left >> replace
    resume >> watch_again >> cleanup
