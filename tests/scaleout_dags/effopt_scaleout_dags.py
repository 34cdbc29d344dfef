"""DAGs of the scaled-out end-to-end tests (``tests/e2e/test_scaleout_e2e.py``), in a bundle of their own.

* ``effopt_scaleout_handoff``: a cached array over 1 MiB made on the ``cpu``
  queue (worker A), consumed on the ``gpu`` queue (worker B) through
  ``CacheReferenceXCom``.
* ``effopt_scaleout_failover``: a cached computation that runs until a file
  appears, so a test can kill its worker mid-task; one retry.
* ``effopt_scaleout_usage``: parallel tasks with known CPU and memory, and a
  task that fails its first try, so the listener has tries on both workers.

Every run's ``token`` goes into the cache keys, so each test starts cold.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, get_current_context, task

from effopt.decorators import cached_task


def _host() -> str:
    return get_current_context()["ti"].hostname


@dag(dag_id="effopt_scaleout_handoff", schedule=None, catchup=False, tags=["effopt-test"],
     params={"rows": 4096, "seed": 7, "token": ""}, render_template_as_native_obj=True)
def effopt_scaleout_handoff():
    @cached_task
    @task(queue="cpu")
    def produce(rows: int, seed: int, token: str):
        import numpy as np

        # rows x 64 float64: 2 MiB for 4096 rows, and as large stored (random doubles do not compress).
        return np.random.default_rng(int(seed)).standard_normal((int(rows), 64))  # ok: seeded test data

    @task(queue="gpu", multiple_outputs=False)
    def consume(features) -> dict:
        return {"type": type(features).__name__, "shape": list(features.shape), "nbytes": int(features.nbytes),
                "sum": float(features.sum()), "host": _host()}

    consume(produce(rows="{{ params.rows }}", seed="{{ params.seed }}", token="{{ params.token }}"))


@dag(dag_id="effopt_scaleout_failover", schedule=None, catchup=False, tags=["effopt-test"],
     params={"token": "", "record_to": "", "go_file": "", "max_wait_s": 240},
     default_args={"retries": 1, "retry_delay": timedelta(seconds=2)}, render_template_as_native_obj=True)
def effopt_scaleout_failover():
    @cached_task(ignore=["record_to", "go_file", "max_wait_s"])
    @task(multiple_outputs=False)
    def slow_features(token: str, record_to: str, go_file: str, max_wait_s: float) -> dict:
        import os
        import time

        with open(record_to, "a") as fh:
            fh.write(f"start {_host()} {os.getpid()}\n")
        deadline = time.monotonic() + float(max_wait_s)
        while not os.path.exists(go_file) and time.monotonic() < deadline:
            time.sleep(0.2)
        with open(record_to, "a") as fh:
            fh.write(f"done {_host()} {os.getpid()}\n")
        return {"token": token, "squares": [i * i for i in range(10)]}

    slow_features(token="{{ params.token }}", record_to="{{ params.record_to }}", go_file="{{ params.go_file }}",
                  max_wait_s="{{ params.max_wait_s }}")


@dag(dag_id="effopt_scaleout_usage", schedule=None, catchup=False, tags=["effopt-test"],
     params={"megabytes": 64, "cpu_seconds": 0.3}, render_template_as_native_obj=True)
def effopt_scaleout_usage():
    @task(multiple_outputs=False)
    def burn(part: int, megabytes: int, cpu_seconds: float) -> dict:
        import time

        block = bytearray(int(megabytes) << 20)
        block[:: 4096] = b"x" * len(block[:: 4096])  # touch every page
        end = time.process_time() + float(cpu_seconds)
        n = 0
        while time.process_time() < end:
            n += 1
        return {"part": part, "host": _host(), "loops": n, "bytes": len(block)}

    @task(retries=1, retry_delay=timedelta(seconds=1))
    def flaky() -> str:
        if get_current_context()["ti"].try_number == 1:
            raise RuntimeError("first try fails on purpose (effopt scale-out test)")
        return _host()

    for part in range(4):
        burn.override(task_id=f"burn_{part}")(part, "{{ params.megabytes }}", "{{ params.cpu_seconds }}")
    flaky()


effopt_scaleout_handoff()
effopt_scaleout_failover()
effopt_scaleout_usage()
