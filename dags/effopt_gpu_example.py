"""effopt_gpu_example: three GPU tasks that each ask 60% of one GPU, on leased devices."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from effopt.decorators import gpu_task

DOC = """
### effopt GPU tasks

Three `@gpu_task(gpu_milli=600)` tasks, each asking 600 thousandths of one GPU. Each takes a GPU lease
before it runs (placed by `[effopt] gpu_policy`), sees its devices in `CUDA_VISIBLE_DEVICES`, renews the
lease while it runs and releases it at the end. Two of them never share a GPU (600 + 600 > 1000): on two
GPUs two run at once and the third waits, deferred in the triggerer (no worker slot held), until a lease
frees, although a pool in thousandths (`[effopt] gpu_pool_unit = milli`) would let all three start: a pool
counts, a lease places.

With no GPUs in the inventory (the default on a machine without them) the tasks run without a lease, with
`CUDA_VISIBLE_DEVICES=""`, and say so. Param `seconds`: how long each task holds its GPU.
"""

with DAG(
    dag_id="effopt_gpu_example",
    schedule=None,
    catchup=False,
    tags=["effopt", "gpu", "example"],
    doc_md=DOC,
    default_args={"owner": "effopt", "retries": 1},
    params={"seconds": Param(5, type="number", minimum=0, maximum=3600,
                             description="how long each task holds its GPU")},
):

    @gpu_task(gpu_milli=600)
    def hold_gpu(name: str, params: dict | None = None) -> dict:
        import os
        import time

        devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        start = time.time()
        time.sleep(float((params or {}).get("seconds", 5)))
        print(f"{name}: CUDA_VISIBLE_DEVICES={devices!r}")
        return {"task": name, "cuda_visible_devices": devices, "start": start, "end": time.time()}

    for n in (1, 2, 3):
        hold_gpu.override(task_id=f"gpu_task_{n}")(f"gpu_task_{n}")
