"""DAGs of ``bench/scaleout_bench.py``, loaded by both topologies it compares (a bundle of their own).

* ``effopt_bench_one``: one task that does nothing (scheduling-to-start latency).
* ``effopt_bench_fanout``: ``n`` mapped tasks that do nothing (throughput).
* ``effopt_bench_cache``: in one task, a cached call per size filled once, then hit ``repeats`` times
  through the task's own computation cache (Redis on the Celery workers, the local folder in standalone).
"""

from __future__ import annotations

from airflow.sdk import dag, task


@dag(dag_id="effopt_bench_one", schedule=None, catchup=False, tags=["effopt-bench"])
def effopt_bench_one():
    @task
    def tiny() -> int:
        return 1

    tiny()


@dag(dag_id="effopt_bench_fanout", schedule=None, catchup=False, tags=["effopt-bench"], params={"n": 200},
     render_template_as_native_obj=True, max_active_tasks=64)
def effopt_bench_fanout():
    @task
    def items(n: int) -> list[int]:
        return list(range(int(n)))

    @task(max_active_tis_per_dag=64)
    def tiny(x: int) -> int:
        return x

    tiny.expand(x=items("{{ params.n }}"))


@dag(dag_id="effopt_bench_cache", schedule=None, catchup=False, tags=["effopt-bench"],
     params={"sizes": [1024, 1048576, 16777216], "repeats": 20, "token": ""}, render_template_as_native_obj=True)
def effopt_bench_cache():
    @task(multiple_outputs=False)
    def hits(sizes: list[int], repeats: int, token: str) -> dict:
        import time

        from effopt.hooks.cache import task_cache

        cache = task_cache("bench")
        out: dict = {"backend": cache.backend.describe(), "seconds": {}}
        for size in sizes:
            def blob(n: int, token: str) -> bytes:
                import numpy as np

                return np.random.default_rng(0).bytes(int(n))  # ok: seeded, incompressible bench data

            fn = cache.cached(blob, name=f"effopt_bench_blob_{size}", version=1)
            first = fn.call((int(size), token), {})
            assert not first.hit and first.stored, first.error
            times = []
            for _ in range(int(repeats)):
                t0 = time.perf_counter()
                result = fn.call((int(size), token), {})
                times.append(time.perf_counter() - t0)
                assert result.hit and len(result.value) == len(first.value), result.error
            out["seconds"][str(size)] = times
        return out

    hits("{{ params.sizes }}", "{{ params.repeats }}", "{{ params.token }}")


effopt_bench_one()
effopt_bench_fanout()
effopt_bench_cache()
