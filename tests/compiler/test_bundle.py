"""dags/effopt_graphs.py through a real DagBag: one DAG per spec, bad specs as import errors, plan cache."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization

from effopt.graph.compiled import clear_memo, compile_spec
from tests.graph.conftest import REPO, reload_settings

BUNDLE = REPO / "dags" / "effopt_graphs.py"
EXPECTED = {"effopt_graph_seed_pipeline", "effopt_graph_ml_models", "effopt_graph_gpu_training"}


def parse(specs: Path, monkeypatch: pytest.MonkeyPatch) -> DagBag:
    monkeypatch.setenv("AIRFLOW__EFFOPT__GRAPH_SPECS_DIR", str(specs))
    reload_settings()
    clear_memo()  # as in the DAG processor, where every parse is a fresh process
    return DagBag(dag_folder=str(BUNDLE))


def test_every_spec_becomes_a_complete_dag(specs_copy, monkeypatch):
    bag = parse(specs_copy, monkeypatch)
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == EXPECTED
    for dag in bag.dags.values():
        assert {"effopt", "effopt-graph"} <= set(dag.tags)
        assert dag.owner == "effopt"
        assert dag.default_args["retries"] == 1 and all(t.retries == 1 for t in dag.tasks)
        assert dag.doc_md and "**Outputs**" in dag.doc_md
        assert dag.schedule is None or str(dag.timetable.summary) == "None"
        DagSerialization.to_dict(dag)  # the DAG processor serialises every DAG it stores
    ml = bag.dags["effopt_graph_ml_models"]
    assert "lasso_features" not in ml.task_ids and "merged `lasso_features` into `ridge_features`" in ml.doc_md


def test_a_bad_spec_is_this_file_import_error_and_the_others_still_load(specs_copy, monkeypatch):
    (specs_copy / "broken.yaml").write_text(
        textwrap.dedent("""
        name: broken
        inputs: [symbol]
        outputs: [model]
        nodes:
          load: {fn: effopt.graph.examples.load_data, inputs: {symbol: symbol}, outputs: [raw]}
          train: {fn: effopt.graph.examples.train_nothing, inputs: {features: feats}, outputs: [model]}
        """)
    )
    (specs_copy / "garbled.yaml").write_text("name: [unclosed\n")
    bag = parse(specs_copy, monkeypatch)
    assert set(bag.dag_ids) == EXPECTED
    assert len(bag.import_errors) == 1
    ((where, message),) = bag.import_errors.items()
    assert where.endswith("effopt_graphs.py")
    assert message.startswith("GraphSpecImportError: 2 graph spec(s)")
    assert "broken.yaml (DAG effopt_graph_broken)" in message
    assert "[missing-producer] node 'train': input 'feats'" in message
    assert "[unresolvable-fn] node 'train': fn 'effopt.graph.examples.train_nothing'" in message
    assert "garbled.yaml (DAG effopt_graph_garbled)" in message and "not valid YAML" in message


def test_duplicate_graph_names_keep_the_first(specs_copy, monkeypatch):
    shutil.copy(specs_copy / "seed_pipeline.yaml", specs_copy / "zz_copy.yaml")
    bag = parse(specs_copy, monkeypatch)
    assert set(bag.dag_ids) == EXPECTED
    (message,) = bag.import_errors.values()
    assert "zz_copy.yaml" in message and "'seed_pipeline' is already used by seed_pipeline.yaml" in message


def test_compiled_plans_are_cached_by_spec_hash(specs_copy, monkeypatch, tmp_path):
    cache = tmp_path / "plan-cache"
    parse(specs_copy, monkeypatch)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 3 and all(name.endswith(".json") for name in files)
    clear_memo()
    spec = specs_copy / "seed_pipeline.yaml"
    assert compile_spec(spec, cache).origin == "file"
    assert compile_spec(spec, cache).origin == "memory"
    spec.write_text(spec.read_text().replace("limit: 1000", "limit: 2000"))
    changed = compile_spec(spec, cache)
    assert changed.origin == "compiled"
    assert changed.graph.nodes["load_data"].params == {"limit": 2000}
    seed_files = [p.name for p in cache.iterdir() if p.name.startswith("seed_pipeline-")]
    assert len(seed_files) == 1 and seed_files[0] not in files  # the stale plan was replaced


def test_a_cached_plan_imports_no_function_at_parse_time(specs_copy, monkeypatch, tmp_path):
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "graph_bundle_test_fns.py").write_text("def double(x: int) -> int:\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(module_dir))
    for spec in specs_copy.iterdir():
        spec.unlink()
    (specs_copy / "lazy.yaml").write_text(
        "inputs: {x: {default: 2}}\noutputs: [y]\nnodes:\n"
        "  double: {fn: graph_bundle_test_fns.double, inputs: [x], outputs: [y]}\n"
    )
    first = parse(specs_copy, monkeypatch)
    assert set(first.dag_ids) == {"effopt_graph_lazy"} and first.import_errors == {}
    (module_dir / "graph_bundle_test_fns.py").unlink()
    sys.modules.pop("graph_bundle_test_fns", None)
    from effopt.graph.model import resolve_callable

    resolve_callable.cache_clear()
    cached = parse(specs_copy, monkeypatch)
    assert set(cached.dag_ids) == {"effopt_graph_lazy"} and cached.import_errors == {}
    monkeypatch.setenv("AIRFLOW__EFFOPT__GRAPH_PLAN_CACHE_DIR", str(tmp_path / "empty-cache"))
    fresh = parse(specs_copy, monkeypatch)
    assert fresh.dag_ids == [] and "no module named 'graph_bundle_test_fns'" in next(iter(fresh.import_errors.values()))


def test_a_missing_spec_folder_is_a_clear_import_error(tmp_path, monkeypatch):
    bag = parse(tmp_path / "nowhere", monkeypatch)
    assert bag.dag_ids == []
    (message,) = bag.import_errors.values()
    assert f"graph spec folder {tmp_path / 'nowhere'} does not exist (set [effopt] graph_specs_dir)" in message
