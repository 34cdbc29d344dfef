"""effopt computation graphs: one DAG per spec in ``include/graphs/*.yaml``.

Each spec ``<name>.yaml`` becomes the DAG ``effopt_graph_<name>``: the graph
is validated, optimised (duplicates merged, unused nodes culled, cheap chains
fused) and planned, then compiled to one task per node whose dependencies are
the data edges (see :mod:`effopt.compiler`).  Graph inputs are DAG params:
trigger a run with ``conf`` such as ``{"symbol": "MSFT"}``.

Parsing stays cheap: compiled plans are cached by the spec's SHA-256 under
``[effopt] graph_plan_cache_dir`` (default ``$AIRFLOW_HOME/effopt-graph-cache``), so
an unchanged spec is neither re-validated nor re-optimised, and no function
module is imported at parse time.

Invalid specs: one DAG file has one import-error slot.  An invalid spec does
not stop this file: its DAG is replaced by a stand-in that fails Airflow's
per-DAG validation, so the file's import error lists every invalid spec (file
name, DAG id, each problem) while the valid specs' DAGs load as usual.

Settings (``[effopt]``): ``graph_specs_dir`` (spec folder, default
``include/graphs`` beside this bundle), ``graph_plan_cache_dir``,
``graph_storage`` (object-storage base for large values, default
``file://$AIRFLOW_HOME/effopt-graph-data``).
"""

from __future__ import annotations

from pathlib import Path

from effopt.compiler import dags_from_specs, specs_dir

SPECS_DIR = specs_dir(str(Path(__file__).resolve().parents[1] / "include" / "graphs"))

for _dag in dags_from_specs(SPECS_DIR):
    globals()[_dag.dag_id] = _dag
