"""Specs cannot cost what they should not: size and alias bombs are refused, duplicate ids are errors,
validation never runs a program, and one bad spec costs only its own DAG."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from effopt.graph import GraphValidationError, load_spec, parse_spec
from effopt.graph.compiled import compile_spec
from effopt.graph.model import resolve_callable
from effopt.graph.spec import SPEC_MAX_VALUES, expanded_size

EX = "effopt.graph.examples"


def _alias_bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}]" for i in range(1, levels)]
    return "\n".join(lines)


def test_an_alias_bomb_in_params_is_refused_at_once():
    bomb = _alias_bomb(9)  # 10**9 values once expanded, a few hundred bytes as text
    text = bomb + textwrap.dedent(f"""
        name: boom
        outputs: [y]
        nodes:
          a: {{fn: {EX}.load_data, outputs: [y], params: {{symbol: X, limit: 3, extra: *a8}}}}
        """)
    start = time.monotonic()
    with pytest.raises(GraphValidationError, match=r"expands to more than 1,000,000 values \(YAML aliases"):
        parse_spec(text, source="boom.yaml")
    assert time.monotonic() - start < 30  # it once ran for minutes (a generous bound: the machine is shared)


def test_expanded_size_counts_shared_parts_each_time_without_walking_them_twice():
    shared = list(range(100))
    doc = {"a": [shared] * 50, "b": shared}
    assert expanded_size(doc) == 1 + 2 + (1 + 50 * 101) + 101
    deep: list = ["x"]
    for _ in range(40):  # 2**40 values when expanded; memoised, so counted in microseconds
        deep = [deep, deep]
    assert expanded_size(deep) > SPEC_MAX_VALUES


def test_a_spec_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path):
    big = tmp_path / "big.yaml"
    big.write_text("name: big\n# " + "x" * 5000 + "\n")
    with pytest.raises(GraphValidationError,
                       match=r"is 5,\d{3} bytes, over the limit of 4,096 \(\[effopt\] graph_spec_max_bytes\)"):
        load_spec(big, max_bytes=4096)
    with pytest.raises(GraphValidationError, match="graph_spec_max_bytes"):
        compile_spec(big, max_bytes=4096)


def test_duplicate_node_ids_are_an_error_not_a_silent_overwrite():
    text = textwrap.dedent(f"""
        name: dup
        outputs: [y]
        nodes:
          a: {{fn: {EX}.load_data, outputs: [y], params: {{symbol: X, limit: 3}}}}
          a: {{fn: {EX}.load_data, outputs: [y], params: {{symbol: Y, limit: 3}}}}
        """)
    with pytest.raises(GraphValidationError, match=r"duplicate key 'a' on line 6 \(first on line 5\)"):
        parse_spec(text, source="dup.yaml")


def test_nan_and_infinite_params_are_rejected():
    text = textwrap.dedent(f"""
        name: n
        outputs: [y]
        nodes:
          a: {{fn: {EX}.load_data, outputs: [y], params: {{symbol: X, limit: .nan}}}}
          b: {{fn: {EX}.load_data, outputs: [z], params: {{symbol: X, limit: .inf}}}}
        """)
    with pytest.raises(GraphValidationError) as err:
        parse_spec(text, source="n.yaml")
    assert "nan is not a finite number" in str(err.value) and "inf is not a finite number" in str(err.value)


def test_validation_never_runs_a_main_module_or_exits(tmp_path: Path, monkeypatch):
    """``fn: venv.__main__.main`` created virtualenvs and exited; a module calling sys.exit is a problem too."""
    monkeypatch.chdir(tmp_path)
    resolve_callable.cache_clear()
    with pytest.raises(ValueError, match="names a __main__ module"):
        resolve_callable("venv.__main__.main")
    pkg = tmp_path / "mods"
    pkg.mkdir()
    (pkg / "exiting.py").write_text("import sys\nsys.exit(3)\ndef f():\n    return 1\n")
    monkeypatch.syspath_prepend(str(pkg))
    with pytest.raises(ValueError, match=r"importing 'exiting' called sys.exit\(3\)"):
        resolve_callable("exiting.f")
    with pytest.raises(ValueError, match="cannot import 'nowhere_at_all.f': no module named 'nowhere_at_all'"):
        resolve_callable("nowhere_at_all.f")
    assert list(tmp_path.iterdir()) == [pkg] and "exiting" not in sys.modules


def test_a_spec_over_its_time_budget_is_refused(tmp_path: Path):
    from tests.graph.conftest import SPECS

    spec = tmp_path / "ml_models.yaml"
    spec.write_bytes((SPECS / "ml_models.yaml").read_bytes())
    with pytest.raises(GraphValidationError, match=r"over its time budget of 1e-09 s"):
        compile_spec(spec, budget_s=1e-9)
    assert compile_spec(spec, budget_s=60).name == "ml_models"
