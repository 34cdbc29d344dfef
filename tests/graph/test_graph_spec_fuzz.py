"""Fuzzed specs: malformed YAML, wrong types and huge names give a clear GraphValidationError, never a crash."""

from __future__ import annotations

import copy
import datetime as dt

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from effopt.graph import ComputationGraph, GraphValidationError, parse_spec
from tests.graph.conftest import SPECS

KINDS = {
    "spec",
    "missing-producer",
    "duplicate-producer",
    "cycle",
    "unresolvable-fn",
    "bad-param-type",
    "bad-argument",
    "duplicate-node",
}
BASE = yaml.safe_load((SPECS / "ml_models.yaml").read_text())
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.text(alphabet="ab_.-:", min_size=1, max_size=5000),
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 1, 1)),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers(), st.booleans()), inner, max_size=4),
    ),
    max_leaves=12,
)


def outcome(source: str | bytes | dict) -> ComputationGraph | GraphValidationError:
    """Parse, returning the graph or the validation error; any other exception fails the test."""
    try:
        return parse_spec(source, source="fuzz.yaml", default_name="fuzz")
    except GraphValidationError as exc:
        assert exc.problems, "an error without problems"
        assert {p.kind for p in exc.problems} <= KINDS
        assert str(exc).startswith("graph spec fuzz.yaml is invalid")
        assert len(str(exc)) < 400 * len(exc.problems) + 200, "messages must stay readable"
        return exc


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text(text):
    outcome(text)


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data):
    outcome(data)


def _paths(doc: dict) -> list[tuple]:
    paths: list[tuple] = [(k,) for k in doc]
    for nid, node in doc["nodes"].items():
        paths.append(("nodes", nid))
        paths += [("nodes", nid, k) for k in node]
        paths += [("nodes", nid, "resources"), ("nodes", nid, "params", "limit")]
    paths += [("inputs", "symbol"), ("inputs", "symbol", "default"), ("capacity",), ("airflow", "group_by")]
    return paths


@FUZZ
@given(st.data())
def test_one_field_of_a_valid_spec_replaced_by_anything(data):
    doc = copy.deepcopy(BASE)
    path = data.draw(st.sampled_from(_paths(BASE)))
    value = data.draw(values)
    target = doc
    for key in path[:-1]:
        target = target.setdefault(key, {}) if isinstance(target, dict) else target
    if isinstance(target, dict):
        target[path[-1]] = value
    result = outcome(yaml.safe_dump(doc))
    if isinstance(result, GraphValidationError):
        text = str(result)
        assert any(str(part)[:20] in text for part in path) or result.kinds - {"spec"}, text


@FUZZ
@given(values)
def test_whole_document_replaced_by_anything(value):
    outcome(yaml.safe_dump(value))
    if isinstance(value, dict):
        outcome(value)


def test_huge_names_are_rejected_with_short_messages():
    huge = "n" * 100_000
    doc = {
        "name": huge,
        "inputs": [huge + "_in"],
        "outputs": [huge],
        "nodes": {huge: {"fn": "x" * 100_000, "inputs": {"a" * 50_000: huge}, "outputs": [huge]}},
    }
    err = outcome(yaml.safe_dump(doc))
    assert isinstance(err, GraphValidationError)
    text = str(err)
    assert len(text) < 3000
    assert "is longer than 100 characters" in text and "is longer than 200 characters" in text
    assert "(100000 chars)" in text


def test_deeply_nested_and_non_mapping_documents():
    for source, expected in [
        ("[" * 5000 + "]" * 5000, "exceeded maximum nesting depth"),
        ("[" * 100 + "]" * 100, "must be a mapping"),
        ("- a\n- b\n", "this one is a list"),
        ("", "this one is empty"),
        ("just text", "this one is a str"),
        ("a: [unclosed\n", "not valid YAML"),
        (b"\xff\xfe\x00", "not UTF-8"),
        ("nodes: {a: 1}\ninputs: 3\noutputs: {}\n", "must be a non-empty list"),
    ]:
        err = outcome(source)
        assert isinstance(err, GraphValidationError) and expected in str(err), (source[:20], str(err))


def test_python_objects_in_a_mapping_spec():
    doc = copy.deepcopy(BASE)
    doc["nodes"]["load_prices"]["params"] = {"limit": {1, 2}}
    doc["nodes"]["compare"]["cost"] = object()
    err = outcome(doc)
    assert isinstance(err, GraphValidationError)
    assert "a set" in str(err) and "'cost' must be a number" in str(err)
