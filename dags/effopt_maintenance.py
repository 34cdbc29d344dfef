"""effopt_maintenance: daily housekeeping of what effopt writes outside Airflow's metadata DB."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

DOC = """
### effopt maintenance

Once a day, removes the large values of compiled graph DAG runs
(`effopt_graph_*` directories only, links never followed) from
`[effopt] graph_storage` once **every** file of a run is older than
`[effopt] graph_retention_days` (default 7; 0 keeps them forever). Each graph
task rewrites its run's marker file when it starts, so a run one of whose
tasks started (or was cleared and re-run) within the retention keeps all of
its values. A file whose store reports no modification time keeps its run and
is listed under `errors`. Values kept in a shared (Redis) cache are not
touched here: the cache bounds them itself.

Params: `graph_retention_days` (empty: the setting) and `dry_run` (list what
would go, remove nothing). The XCom `return_value` is the report:

```json
{"storage": "file:///opt/airflow/effopt-graph-data", "retention_days": 7.0, "runs_seen": 12,
 "runs_kept": 9, "runs_removed": 3, "files_removed": 41, "bytes_removed": 734003200,
 "removed": [{"path": "...", "files": 14, "bytes": 244667733, "newest_mtime": 1764000000.0}], "errors": []}
```
"""


@dag(
    dag_id="effopt_maintenance",
    schedule="@daily",
    catchup=False,
    max_active_runs=1,  # two prunes of the same storage at once would only race
    tags=["effopt", "graph", "maintenance"],
    doc_md=DOC,
    default_args={"owner": "effopt", "retries": 2, "retry_delay": timedelta(minutes=5)},
    params={
        "graph_retention_days": Param(None, type=["null", "number"], minimum=0,
                                      description="empty: [effopt] graph_retention_days"),
        "dry_run": Param(False, type="boolean", description="list what would be removed, remove nothing"),
    },
)
def effopt_maintenance():
    @task(multiple_outputs=False)
    def prune_graph_values(params: dict | None = None) -> dict:
        from effopt.operators.maintenance import prune_graph_values

        params = params or {}
        return prune_graph_values(params.get("graph_retention_days"), dry_run=bool(params.get("dry_run")))

    prune_graph_values()


effopt_maintenance()
