"""Validation: each kind of problem is caught, named, and all problems of a spec are reported together."""

from __future__ import annotations

import textwrap

import pytest

from effopt.graph import ComputationGraph, GraphValidationError, Node, load_spec, parse_spec, plan, validate
from effopt.graph.model import resolve_callable

EX = "effopt.graph.examples"


def spec(body: str) -> str:
    return textwrap.dedent(body)


def problems_of(text: str) -> GraphValidationError:
    with pytest.raises(GraphValidationError) as info:
        parse_spec(spec(text), source="test.yaml", default_name="test")
    return info.value


def test_example_specs_are_valid(tmp_path):
    from tests.graph.conftest import SPECS

    names = {load_spec(p).name for p in sorted(SPECS.glob("*.yaml"))}
    assert names == {"seed_pipeline", "ml_models", "gpu_training"}


def test_missing_producer_names_node_input_and_suggests():
    err = problems_of(f"""
        inputs: [symbol]
        outputs: [features]
        nodes:
          load: {{fn: {EX}.load_data, inputs: {{symbol: symbol}}, outputs: [raw_data]}}
          feats: {{fn: {EX}.compute_features, inputs: {{raw_data: raw_dta}}, outputs: [features]}}
        """)
    assert err.kinds == {"missing-producer"}
    (problem,) = err.problems
    assert problem.nodes == ("feats",)
    assert "'raw_dta'" in problem.message and "argument 'raw_data'" in problem.message
    assert "did you mean 'raw_data'" in problem.message
    assert "test.yaml" in str(err)


def test_requested_output_without_producer():
    err = problems_of(f"""
        inputs: [symbol]
        outputs: [modle]
        nodes:
          load: {{fn: {EX}.load_data, inputs: {{symbol: symbol}}, outputs: [model]}}
        """)
    assert err.kinds == {"missing-producer"}
    assert "requested output 'modle'" in str(err) and "did you mean 'model'" in str(err)


def test_duplicate_producers_name_both_nodes():
    err = problems_of(f"""
        inputs: [symbol]
        outputs: [raw]
        nodes:
          a: {{fn: {EX}.load_data, inputs: {{symbol: symbol}}, outputs: [raw]}}
          b: {{fn: {EX}.load_data, inputs: {{symbol: symbol}}, outputs: [raw]}}
          c: {{fn: {EX}.load_data, inputs: {{symbol: symbol}}, outputs: [symbol]}}
        """)
    assert err.kinds == {"duplicate-producer"}
    by_nodes = {p.nodes: p.message for p in err.problems}
    assert ("a", "b") in by_nodes and "produced by 2 nodes" in by_nodes[("a", "b")]
    assert ("c",) in by_nodes and "is a graph input" in by_nodes[("c",)]


def test_cycle_reported_with_its_path():
    err = problems_of(f"""
        inputs: [x]
        outputs: [d]
        nodes:
          a: {{fn: {EX}.standardize, inputs: {{features: c_out}}, outputs: [a_out]}}
          b: {{fn: {EX}.standardize, inputs: {{features: a_out}}, outputs: [b_out]}}
          c: {{fn: {EX}.standardize, inputs: {{features: b_out}}, outputs: [c_out]}}
          d: {{fn: {EX}.standardize, inputs: {{features: c_out}}, outputs: [d]}}
          self: {{fn: {EX}.standardize, inputs: {{features: s}}, outputs: [s]}}
        """)
    assert err.kinds == {"cycle"}
    messages = sorted(p.message for p in err.problems)
    assert messages == ["cycle: 'a' -> 'b' -> 'c' -> 'a'", "cycle: 'self' -> 'self'"]
    assert {p.nodes for p in err.problems} == {("a", "b", "c"), ("self",)}


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        ("no_such_package.mod.fn", "no module named 'no_such_package'"),
        (f"{EX}.not_there", "has no attribute 'not_there'"),
        ("effopt.graph.model.MISSING", "not a callable"),
        ("justaname", "not a dotted path"),
    ],
)
def test_unresolvable_dotted_paths(fn, expected):
    err = problems_of(f"""
        inputs: [x]
        outputs: [y]
        nodes:
          n: {{fn: {fn}, inputs: {{a: x}}, outputs: [y]}}
        """)
    assert err.kinds == {"unresolvable-fn"}
    assert expected in err.problems[0].message and err.problems[0].nodes == ("n",)


def test_import_error_inside_a_module_is_reported(tmp_path, monkeypatch):
    (tmp_path / "broken_mod_for_graph_test.py").write_text("raise RuntimeError('module side effect failed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="RuntimeError: module side effect failed"):
        resolve_callable("broken_mod_for_graph_test.fn")


def test_bad_parameter_types():
    err = problems_of(f"""
        inputs: [symbol]
        outputs: [raw]
        nodes:
          load:
            fn: {EX}.load_data
            inputs: {{symbol: symbol}}
            outputs: [raw]
            params: {{limit: "1000"}}
          dated:
            fn: {EX}.describe_prices
            inputs: {{raw_data: raw}}
            outputs: [summary]
            params: {{since: 2024-01-01}}
          ridge:
            fn: {EX}.train_ridge
            inputs: {{train: raw}}
            outputs: [model]
            params: {{alpha: true}}
        """)
    kinds = {(p.kind, p.nodes) for p in err.problems}
    assert ("bad-param-type", ("load",)) in kinds
    assert ("bad-param-type", ("dated",)) in kinds
    assert ("bad-param-type", ("ridge",)) in kinds
    text = str(err)
    assert "param 'limit' = '1000' (str) does not match int" in text
    assert "date" in text and "quote it" in text
    assert "param 'alpha' = True (bool) does not match float" in text


def test_arguments_the_function_does_not_take_or_needs():
    err = problems_of(f"""
        inputs: [symbol]
        outputs: [raw]
        nodes:
          load: {{fn: {EX}.load_data, inputs: {{ticker: symbol}}, outputs: [raw], params: {{limt: 3}}}}
        """)
    messages = [p.message for p in err.problems if p.kind == "bad-argument"]
    assert any("no keyword argument 'ticker'" in m for m in messages)
    assert any("no keyword argument 'limt'" in m for m in messages)
    assert any("argument 'symbol' of 'effopt.graph.examples.load_data' is required" in m for m in messages)


def test_all_problems_of_one_spec_are_reported_together():
    err = problems_of(f"""
        name: everything_wrong
        inputs: [symbol]
        outputs: [model, ghost]
        nodes:
          load: {{fn: {EX}.load_data, inputs: {{symbol: symbol}}, outputs: [raw], params: {{limit: "x"}}}}
          again: {{fn: {EX}.load_data, inputs: {{symbol: symbol}}, outputs: [raw]}}
          feats: {{fn: {EX}.compute_features, inputs: {{raw_data: loop}}, outputs: [features]}}
          loop: {{fn: {EX}.standardize, inputs: {{features: loop}}, outputs: [loop]}}
          model: {{fn: {EX}.no_model, inputs: {{features: features}}, outputs: [model]}}
          typo: {{fn: {EX}.standardize, inputs: {{features: nothing}}, outputs: [t], cost: -1, colour: red}}
        """)
    assert err.kinds == {"bad-param-type", "duplicate-producer", "cycle", "unresolvable-fn", "missing-producer", "spec"}
    assert len(err.problems) >= 7
    text = str(err)
    assert text.startswith(f"graph spec test.yaml is invalid ({len(err.problems)} problems):")
    for name in ("'load'", "'again'", "'loop'", "'model'", "'typo'", "'ghost'", "'colour'"):
        assert name in text


def test_graph_built_in_python_is_validated_too():
    nodes = [
        Node("a", "tests.graph.graph_fns.add", {"a": "x"}, ("y",), cost=-2),
        Node("b", lambda a: a, {"a": "zz"}, ("w",)),
        Node("c", "tests.graph.graph_fns.mix", {"a": "x"}, ("y",), resources={"gpu": 1.5}),
    ]
    graph = ComputationGraph.from_nodes("py", nodes, ["x"], ["w"])
    with pytest.raises(GraphValidationError) as info:
        validate(graph)
    text = str(info.value)
    assert "cost -2 must be a number >= 0" in text
    assert "resources.gpu 1.5 must be a whole number" in text
    assert "input 'zz'" in text
    assert "produced by 2 nodes: 'a', 'c'" in text


def test_duplicate_node_ids_in_python():
    with pytest.raises(GraphValidationError, match="node id 'a' is used twice"):
        ComputationGraph.from_nodes("dup", [Node("a", "m.f", outputs="x"), Node("a", "m.f", outputs="y")])


def test_plan_rejects_nodes_larger_than_capacity():
    graph = load_spec(__import__("tests.graph.conftest", fromlist=["SPECS"]).SPECS / "gpu_training.yaml")
    with pytest.raises(GraphValidationError) as info:
        plan(graph, {"gpu": 0})
    assert info.value.kinds == {"capacity"}
    assert {p.nodes for p in info.value.problems} == {("train_mlp",), ("train_mlp_wide",)}
    assert "needs gpu=1 but the capacity is 0" in str(info.value)
