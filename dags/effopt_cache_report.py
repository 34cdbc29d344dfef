"""effopt_cache_report: daily hit rate and time saved of every cached function."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

DOC = """
### effopt cache report

Once a day, reads the computation cache's shared statistics (Redis or the
local backend, as `[effopt] cache_backend` says), compares them with the
previous report's snapshot in the effopt store, and pushes the period's
summary as XCom `return_value`:

```json
{"period_start": 1764288000.0, "period_end": 1764374400.0,
 "totals": {"calls": 120, "hits": 96, "hit_rate": 0.8, "saved_s": 5400.2, ...},
 "functions": [{"namespace": "airflow", "function": "features.build", "hit_rate": 0.9, "saved_s": 4800.0, ...}]}
```

`period_start` is `null` on the first report (counters since they began).
`problems` lists corrupted statistics found while reading (each reset to 0).
The waste report reads this summary for its cache-inefficiency findings.
Trigger it any time from the UI or the REST API; each run starts a new period.
"""


@dag(
    dag_id="effopt_cache_report",
    schedule="@daily",
    catchup=False,
    tags=["effopt", "cache", "report"],
    doc_md=DOC,
    default_args={"owner": "effopt", "retries": 2, "retry_delay": timedelta(minutes=5)},
)
def effopt_cache_report():
    @task(multiple_outputs=False)
    def summarize_cache() -> dict:
        import time

        from effopt.airflow_settings import get_store
        from effopt.cache.report import difference, summarize
        from effopt.hooks.cache import CacheHook

        now = time.time()
        backend = CacheHook().get_backend()
        problems: list[str] = []
        counters = backend.read_stats(None, problems)  # corrupted statistics are reported and reset, never fatal
        backend.close()
        store = get_store()
        previous = store.latest_cache_snapshot(before=now)
        period = difference(counters, previous[1] if previous else None)
        summary = summarize(period)
        store.save_cache_snapshot(now, counters)
        summary["period_start"] = previous[0] if previous else None
        summary["period_end"] = now
        summary["backend"] = backend.describe()
        summary["problems"] = problems
        totals = summary["totals"]
        print(
            f"effopt cache report: {totals['calls']} calls, hit rate "
            f"{'n/a' if totals['hit_rate'] is None else format(totals['hit_rate'], '.1%')}, "
            f"{totals['saved_s']:.1f} s saved, {totals['errors']} errors, {totals['rejected']} rejected entries"
        )
        for problem in problems:
            print(f"  repaired corrupted statistics: {problem}")
        for f in summary["functions"][:20]:
            rate = "n/a" if f["hit_rate"] is None else f"{f['hit_rate']:.1%}"
            print(f"  {f['namespace']}/{f['function']}: {f['calls']} calls, hit rate {rate}, "
                  f"{f['saved_s']:.1f} s saved")
        return summary

    summarize_cache()


effopt_cache_report()
