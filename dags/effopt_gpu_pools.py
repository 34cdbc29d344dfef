"""effopt_gpu_pools: Airflow's GPU pools kept equal to the GPUs that exist, every 5 minutes."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param

from effopt.operators.gpu_pools import GpuPoolSyncOperator

DOC = """
### effopt GPU pools

Reads the GPU inventory (`[effopt] gpu_inventory`: `auto` is this host's NVIDIA driver when one answers, else
the static `gpu_inventory_file`; or `kubernetes`, `prometheus`) and keeps these pools equal to it, through
Airflow's REST API (`[effopt] airflow_api_conn_id`), in slots of `[effopt] gpu_pool_unit`:

- `effopt_gpu`: every GPU; `effopt_gpu_<model>`: the GPUs of one model (MIG slices as `mig-<profile>`);
- `effopt_quota_<tenant>[_<model>]`: each quota of `[effopt] gpu_quotas`, capped by what exists;
- `effopt_serial`: the one-slot pool of graph nodes marked `parallel: false` (created when missing).

A second run changes nothing. A pool still used by running or queued tasks is never deleted (it is emptied
and deleted later); a shrink below the occupied slots is done and reported (running tasks go on, new ones
wait). With no GPUs in the inventory no GPU pool is touched, and the run says so. Every change is recorded in
the effopt store and shown on the effopt page. `dry_run` plans and reports, changing nothing.
"""

with DAG(
    dag_id="effopt_gpu_pools",
    schedule="*/5 * * * *",
    catchup=False,
    max_active_runs=1,
    tags=["effopt", "gpu"],
    doc_md=DOC,
    default_args={"owner": "effopt", "retries": 1, "retry_delay": timedelta(seconds=30)},
    params={"dry_run": Param(False, type="boolean", description="plan and report, change no pool")},
    render_template_as_native_obj=True,
):
    GpuPoolSyncOperator(task_id="sync_pools", dry_run="{{ params.dry_run }}")
