"""effopt self-test: checks that the task-usage listener measures real work."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

DOC = """
### effopt self-test

Trigger it after installing effopt. `allocate_and_burn` touches about 200 MB
of memory and burns about one CPU-second; the effopt task-usage listener
records every task's wall time, CPU seconds and peak RSS in the effopt store.

See them with `python -m effopt usage --dag effopt_selftest`.

Run `conf`: `{"megabytes": 200, "cpu_seconds": 1.0}` (the defaults).
"""


@dag(
    dag_id="effopt_selftest",
    schedule=None,
    catchup=False,
    tags=["effopt", "selftest"],
    doc_md=DOC,
    default_args={"owner": "effopt", "retries": 1, "retry_delay": timedelta(seconds=10)},
    params={"megabytes": 200, "cpu_seconds": 1.0},
)
def effopt_selftest():
    @task(multiple_outputs=False)
    def prepare(params=None) -> dict:
        return {"megabytes": int(params["megabytes"]), "cpu_seconds": float(params["cpu_seconds"])}

    @task(multiple_outputs=False)
    def allocate_and_burn(spec: dict) -> dict:
        import time

        import numpy as np

        block = np.ones(spec["megabytes"] * 1024 * 1024 // 8)  # every page written: resident
        checksum = float(block[:: 4096 // 8].sum())
        del block
        start = time.process_time()
        spins = 0
        while time.process_time() - start < spec["cpu_seconds"]:
            spins += sum(i * i for i in range(1000)) & 1
        return {"checksum": checksum, "cpu_s": time.process_time() - start}

    @task
    def report(result: dict) -> str:
        return f"touched pages checksum {result['checksum']:.0f}, burned {result['cpu_s']:.2f} CPU-s"

    report(allocate_and_burn(prepare()))


effopt_selftest()
