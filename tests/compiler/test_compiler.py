"""The Airflow compiler, built in-process with airflow.sdk: task ids, edges, pools, groups, values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from airflow.sdk import DAG

from effopt.compiler import GraphNodeOperator, ObjectStorageValueStore, to_airflow
from effopt.graph import ComputationGraph, Node, compile_graph, load_spec, run_local
from effopt.graph.naming import task_id_for
from effopt.graph.values import TAG, ValueCodec
from effopt.hooks.cache import signing_key
from tests.graph.conftest import SPECS

F = "tests.graph.graph_fns."


def new_dag(dag_id: str = "compiled", **kwargs: Any) -> DAG:
    return DAG(dag_id, schedule=None, **kwargs)


def upstream(dag: DAG) -> dict[str, set[str]]:
    return {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}


def test_one_task_per_optimised_node_and_edges_are_exactly_the_data_edges():
    graph = load_spec(SPECS / "ml_models.yaml")
    dag = new_dag()
    result = to_airflow(graph, dag)
    expected = {
        "load_prices", "ridge_features", "ridge_labels", "ridge_scaled__ridge_clipped", "ridge_split",
        "train_ridge", "train_lasso", "eval_ridge", "eval_lasso", "compare",
    }  # fmt: skip
    assert set(dag.task_ids) == expected
    for gone in ("lasso_features", "lasso_scaled", "lasso_clipped", "lasso_labels", "lasso_split", "price_summary"):
        assert gone not in dag.task_ids
    optimized = result.compiled.graph
    edges = {(result.task_ids[p], result.task_ids[c]) for p, c, _ in optimized.data_edges()}
    assert {(u, t) for t, ups in upstream(dag).items() for u in ups} == edges
    assert upstream(dag)["ridge_split"] == {"ridge_scaled__ridge_clipped", "ridge_labels"}
    assert upstream(dag)["eval_lasso"] == {"train_lasso", "ridge_split"}
    assert result.outputs == {
        "comparison": ("compare", "comparison"),
        "ridge_model": ("train_ridge", "ridge_model"),
        "lasso_model": ("train_lasso", "lasso_model"),
    }
    assert dict(dag.params) == {"symbol": "MSFT", "limit": 20000}
    assert all(isinstance(t, GraphNodeOperator) for t in dag.tasks)
    dag.validate()
    dag.check_cycle()


def test_task_groups_per_stage_keep_task_ids_stable():
    graph = load_spec(SPECS / "ml_models.yaml")
    dag = new_dag()
    result = to_airflow(graph, dag)
    stages = result.compiled.plan.stages
    assert set(result.groups) == {f"stage_{i}" for i in range(1, len(stages) + 1)}
    for i, stage in enumerate(stages, start=1):
        for nid in stage:
            task = dag.get_task(result.task_ids[nid])
            assert task.task_id == nid  # prefix_group_id=False: the group is for display only
            assert task.task_group.group_id == f"stage_{i}"


def test_declared_groups_and_no_groups():
    nodes = [
        Node("a", F + "add", {"a": "x"}, ("y",), group="ingest"),
        Node("b", F + "mix", {"a": "y"}, ("z",), group="ingest"),
        Node("c", F + "mix", {"a": "z"}, ("w",), group="train"),
        Node("d", F + "add", {"a": "w"}, ("v",)),
        Node("ingest", F + "add", {"a": "v"}, ("u",)),
    ]
    graph = ComputationGraph.from_nodes("groups", nodes, ["x"], ["u"])
    dag = new_dag()
    result = to_airflow(graph, dag, group_by="group")
    assert set(result.groups) == {"ingest_2", "train"}  # the group id 'ingest' is taken by a task
    groups = {t.task_id: t.task_group.group_id for t in dag.tasks}
    assert groups == {"a": "ingest_2", "b": "ingest_2", "c": "train", "d": None, "ingest": None}
    flat = new_dag("flat")
    to_airflow(graph, flat, group_by="none")
    assert {t.task_group.group_id for t in flat.tasks} == {None}
    with pytest.raises(ValueError, match="group_by must be"):
        to_airflow(graph, new_dag("bad"), group_by="stages")


def test_serial_and_gpu_pools():
    graph = load_spec(SPECS / "gpu_training.yaml")
    dag = new_dag()
    to_airflow(graph, dag)
    pools = {t.task_id: (t.pool, t.pool_slots) for t in dag.tasks}
    assert pools.pop("train_mlp") == ("effopt_gpu", 1)
    assert pools.pop("train_mlp_wide") == ("effopt_gpu", 1)
    assert pools.pop("load_prices") == ("effopt_serial", 1)
    assert set(pools.values()) == {("default_pool", 1)}
    two = ComputationGraph.from_nodes(
        "two", [Node("big", F + "add", {"a": "x"}, ("y",), resources={"gpu": 2})], ["x"], ["y"]
    )
    other = new_dag("two")
    to_airflow(two, other, gpu_pool="a100", serial_pool="one_at_a_time")
    assert (other.get_task("big").pool, other.get_task("big").pool_slots) == ("a100", 2)


def test_critical_path_gets_the_highest_priority():
    dag = new_dag()
    result = to_airflow(load_spec(SPECS / "ml_models.yaml"), dag)
    weights = {t.task_id: t.priority_weight for t in dag.tasks}
    assert weights["train_lasso"] > weights["train_ridge"]  # 3 s vs 1 s left
    assert max(weights, key=weights.get) == result.compiled.plan.critical_path[0]


def test_long_and_invalid_node_ids_get_readable_stable_hashed_task_ids():
    long_a = "feature_" + "x" * 140 + "_alpha"
    long_b = "feature_" + "x" * 140 + "_beta"
    nodes = [
        Node(long_a, F + "add", {"a": "x"}, ("y",)),
        Node(long_b, F + "add", {"a": "x"}, ("z",), params={"k": 1}),
        Node("has space+plus", F + "mix", {"a": "y"}, ("w",)),
        Node("fine-id", F + "mix", {"a": "z"}, ("v",)),
    ]
    graph = ComputationGraph.from_nodes("ids", nodes, ["x"], ["w", "v"])
    dag = new_dag()
    result = to_airflow(graph, dag, max_task_id_length=40)
    ids = result.task_ids
    assert len(set(ids.values())) == 4
    assert ids["fine-id"] == "fine-id"
    assert (
        ids["has space+plus"].startswith("has_space_plus_") and len(ids["has space+plus"]) == len("has_space_plus_") + 8
    )
    for long in (long_a, long_b):
        assert len(ids[long]) == 40 and ids[long].startswith("feature_xxx")
    assert ids[long_a] != ids[long_b]
    again = to_airflow(graph, new_dag("again"), max_task_id_length=40)
    assert again.task_ids == ids
    assert task_id_for(long_a, 40) == ids[long_a]  # depends on the node's own id only
    with pytest.raises(ValueError, match="max_length"):
        task_id_for("a", 300)


def test_stage_barriers():
    dag = new_dag()
    result = to_airflow(load_spec(SPECS / "ml_models.yaml"), dag, stage_barriers=True)
    stages = result.compiled.plan.stages
    assert [b.task_id for b in result.barriers] == [f"stage_{i}_done" for i in range(1, len(stages))]
    for i, barrier in enumerate(result.barriers):
        assert set(barrier.upstream_task_ids) == set(stages[i])
        assert set(barrier.downstream_task_ids) == set(stages[i + 1])
    dag.check_cycle()


def test_params_are_added_to_a_dag_without_them():
    dag = new_dag(params={"other": 1})
    to_airflow(load_spec(SPECS / "seed_pipeline.yaml"), dag)
    assert dict(dag.params) == {"other": 1, "symbol": "AAPL"}


class TaskInstanceDouble:
    """What GraphNodeOperator.execute uses of a task instance: XCom push and pull (JSON round trip, as the API does)."""

    def __init__(self, task_id: str, store: dict[tuple[str, str], str]) -> None:
        self.task_id = task_id
        self.store = store

    def xcom_push(self, key: str, value: Any) -> None:
        self.store[(self.task_id, key)] = json.dumps(value)

    def xcom_pull(self, task_ids: str, key: str, default: Any = None) -> Any:
        raw = self.store.get((task_ids, key))
        return default if raw is None else json.loads(raw)


def run_tasks(dag: DAG, params: dict[str, Any]) -> dict[tuple[str, str], str]:
    store: dict[tuple[str, str], str] = {}
    for task in dag.topological_sort():
        context = {
            "ti": TaskInstanceDouble(task.task_id, store),
            "params": params,
            "run_id": "manual__2026-01-01T00:00:00+00:00",
        }
        task.execute(context)
    return store


def test_tasks_pass_small_values_inline_and_large_ones_by_reference(tmp_path):
    graph = load_spec(SPECS / "ml_models.yaml")
    base = f"file://{tmp_path}/storage"
    dag = new_dag("values")
    result = to_airflow(graph, dag, storage_base=base, xcom_max_bytes=16_384)
    params = {"symbol": "AMZN", "limit": 3000}
    store = run_tasks(dag, params)
    expected = run_local(result.compiled.graph, params)
    codec = ValueCodec(ObjectStorageValueStore(base), signing_key=signing_key())
    for name, (task_id, key) in result.outputs.items():
        assert codec.decode(json.loads(store[(task_id, key)])) == expected[name]
    prices = json.loads(store[("load_prices", "prices")])
    assert prices[TAG] == "ref" and prices["format"] == "npy"
    assert prices["location"].startswith(base + "/values/manual__2026-01-01T00_00_00_00_00/load_prices/prices.npy")
    assert Path(prices["location"].removeprefix("file://")).is_file()
    train = json.loads(store[("ridge_split", "ridge_train")])
    assert train[TAG] == "ref" and train["format"] == "pickle"  # a dict of arrays
    model = json.loads(store[("train_ridge", "ridge_model")])
    assert model["kind"] == "ridge"  # small JSON: inline, readable through the REST API
    # every task marked its run active in the storage (what retention keeps a run by)
    from effopt.graph.retention import RUN_MARKER

    assert (tmp_path / "storage" / "values" / "manual__2026-01-01T00_00_00_00_00" / RUN_MARKER).is_file()


def test_missing_graph_input_and_missing_xcom_are_named(tmp_path):
    dag = new_dag("missing")
    to_airflow(load_spec(SPECS / "seed_pipeline.yaml"), dag, storage_base=f"file://{tmp_path}")
    store: dict[tuple[str, str], str] = {}
    load = dag.get_task("load_data")
    with pytest.raises(ValueError, match="graph input 'symbol' is missing"):
        load.execute({"ti": TaskInstanceDouble("load_data", store), "params": {}, "run_id": "r"})
    features = dag.get_task("compute_features")
    with pytest.raises(ValueError, match="no XCom 'raw_data' from task 'load_data'"):
        features.execute({"ti": TaskInstanceDouble("compute_features", store), "params": {}, "run_id": "r"})


def test_codec_round_trips(tmp_path):
    codec = ValueCodec(ObjectStorageValueStore(f"file://{tmp_path}"), max_inline_bytes=1000, signing_key=b"k" * 32)
    small = np.arange(10, dtype=np.int16).reshape(2, 5)
    big = np.linspace(0, 1, 1000)
    cases = {
        "small": small,
        "big": big,
        "json": {"a": [1, 2.5, None]},
        "big_json": list(range(1000)),
        "tuple": (1, "a"),
        "none": None,
    }
    encoded = {name: json.loads(json.dumps(codec.encode(value, f"run/{name}"))) for name, value in cases.items()}
    assert encoded["small"][TAG] == "npy"
    assert encoded["big"][TAG] == "ref" and encoded["big"]["nbytes"] > 8000
    assert encoded["json"] == {"a": [1, 2.5, None]}
    assert encoded["big_json"]["format"] == "json"
    assert encoded["tuple"]["format"] == "pickle"
    assert encoded["none"] == {TAG: "none"}
    for name, value in cases.items():
        back = codec.decode(encoded[name])
        if isinstance(value, np.ndarray):
            assert back.dtype == value.dtype and np.array_equal(back, value)
        else:
            assert back == value
    foreign = dict(encoded["big"], kind="cache")
    with pytest.raises(ValueError, match="kind 'cache'.*no such store is configured"):
        codec.decode(foreign)


def test_precompiled_plan_and_unoptimised_graph():
    graph = load_spec(SPECS / "ml_models.yaml")
    raw = new_dag("raw")
    to_airflow(graph, raw, optimized=False)
    assert len(raw.tasks) == len(graph)
    compiled = compile_graph(graph)
    dag = new_dag("pre")
    assert to_airflow(compiled, dag).compiled is compiled


class _Booby:
    """Unpickling this creates a file: proof that tampered bytes were (not) unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_values_are_signed_and_tampering_is_refused(tmp_path):
    codec = ValueCodec(ObjectStorageValueStore(f"file://{tmp_path}"), max_inline_bytes=10, signing_key=b"k" * 32)
    ref = codec.encode((1, "a"), "run/pair")
    location = Path(ref["location"].removeprefix("file://"))
    assert codec.decode(ref) == (1, "a")

    # Someone with write access to the store swaps in a payload with side effects.
    import pickle

    marker = tmp_path / "pwned"
    data = location.read_bytes()
    location.write_bytes(data[:32] + pickle.dumps(_Booby(str(marker))))
    with pytest.raises(ValueError, match="failed signature verification"):
        codec.decode(ref)
    assert not marker.exists()
    # A reader with another key refuses too; one without a key does not even try.
    location.write_bytes(data)
    with pytest.raises(ValueError, match="failed signature verification"):
        ValueCodec(codec.store, signing_key=b"x" * 32).decode(ref)
    with pytest.raises(ValueError, match="no signing key"):
        ValueCodec(codec.store).decode(ref)
    with pytest.raises(TypeError, match="needs a signing key"):
        ValueCodec(codec.store, max_inline_bytes=10).encode((1, "a"), "run/pair2")


def test_pickled_values_signed_before_a_key_rotation_still_verify(tmp_path, monkeypatch, caplog):
    """[effopt] cache_secret_fallbacks: values signed with a key rotated out are read (with one warning that
    names the fallback by position only), new ones use the new key; the setting reaches the tasks' keys."""
    import logging

    from effopt.graph import values as values_module
    from effopt.hooks.cache import fallback_keys
    from tests.graph.conftest import reload_settings

    monkeypatch.setenv("AIRFLOW__EFFOPT__CACHE_SECRET", "new" * 11)
    monkeypatch.setenv("AIRFLOW__EFFOPT__CACHE_SECRET_FALLBACKS", "old" * 11)
    reload_settings()
    assert (signing_key(), fallback_keys()) == (b"new" * 11, (b"old" * 11,))
    monkeypatch.setattr(values_module, "_FALLBACKS_WARNED", set())
    store = ObjectStorageValueStore(f"file://{tmp_path}")
    old_ref = ValueCodec(store, max_inline_bytes=10, signing_key=b"old" * 11).encode((1, "a"), "run/old")
    rotated = ValueCodec(store, max_inline_bytes=10, signing_key=signing_key(), fallback_keys=fallback_keys())
    with caplog.at_level(logging.WARNING, logger="effopt.graph.values"):
        assert rotated.decode(old_ref) == (1, "a") and rotated.decode(old_ref) == (1, "a")
    warned = [r.getMessage() for r in caplog.records if "fallback key" in r.getMessage()]
    assert len(warned) == 1 and "fallback key 1 of 1" in warned[0] and "old" * 11 not in warned[0]
    new_ref = rotated.encode((2, "b"), "run/new")
    with pytest.raises(ValueError, match="failed signature verification"):  # new values: new key only
        ValueCodec(store, signing_key=b"old" * 11).decode(new_ref)
    with pytest.raises(ValueError, match="failed signature verification"):  # fallback dropped: refused
        ValueCodec(store, signing_key=b"new" * 11).decode(old_ref)
