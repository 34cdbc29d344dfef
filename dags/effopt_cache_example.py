"""effopt_cache_example: a cached feature computation whose result goes downstream by reference."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from effopt.decorators import cached_task

DOC = """
### effopt cached-computation example

`build_features` is an expensive, deterministic computation wrapped in
`@cached_task`: the first run computes it and stores the result (signed) in
the computation cache; later runs with the same `conf` take it from the cache
without running the body (the task log says `effopt cache hit`, and the
`effopt_cache` XCom shows the key and the seconds saved).

Its result (a float64 matrix of `rows x 64`) is larger than 1 MiB, so XCom
carries a small cache reference; `summarize` receives the matrix itself
through effopt's XCom backend.

Run `conf`: `{"rows": 20000, "seed_column": 3}`; add
`"effopt_cache_refresh": true` to recompute. `record_to` (optional) names a
file the body appends a line to each time it really runs. `hold_while`
(optional) names a file: the body waits while it exists (at most 10 minutes),
so a second run with the same `conf` can be watched waiting `deferred` (in the
triggerer, no worker slot held) for the first one's result.
"""


@dag(
    dag_id="effopt_cache_example",
    schedule=None,
    catchup=False,
    tags=["effopt", "cache", "example"],
    doc_md=DOC,
    default_args={"owner": "effopt", "retries": 1, "retry_delay": timedelta(seconds=10)},
    params={"rows": 20000, "seed_column": 3, "record_to": "", "hold_while": ""},
    render_template_as_native_obj=True,
)
def effopt_cache_example():
    @cached_task(tags=["example"], ignore=["record_to", "hold_while"])
    @task
    def build_features(rows: int, seed_column: int, record_to: str = "", hold_while: str = ""):
        import os
        import time

        import numpy as np

        if record_to:
            with open(record_to, "a") as fh:
                fh.write(f"computed rows={rows} seed_column={seed_column}\n")
        deadline = time.monotonic() + 600
        while hold_while and os.path.exists(hold_while) and time.monotonic() < deadline:
            time.sleep(0.2)
        t = np.linspace(0.0, 200.0 * np.pi, int(rows))
        base = np.stack([np.sin(t * (k + 1) / 64.0 + seed_column) for k in range(64)], axis=1)
        # a deliberately heavy step: 40 rounds of smoothing over the whole matrix
        for _ in range(40):
            base = 0.5 * base + 0.25 * (np.roll(base, 1, axis=0) + np.roll(base, -1, axis=0))
        return base

    @task(multiple_outputs=False)
    def summarize(features) -> dict:
        return {
            "shape": list(features.shape),
            "mean": round(float(features.mean()), 10),
            "column_std": [round(float(v), 10) for v in features.std(axis=0)[:4]],
        }

    summarize(
        build_features(
            rows="{{ params.rows }}", seed_column="{{ params.seed_column }}", record_to="{{ params.record_to }}",
            hold_while="{{ params.hold_while }}",
        )
    )


effopt_cache_example()
