"""Fixtures of the computation-graph tests.

Airflow is imported in-process by the compiler and bundle tests; the root
conftest gives the session a throwaway AIRFLOW_HOME.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "include" / "graphs"


@pytest.fixture
def specs_copy(tmp_path: Path) -> Path:
    """A private copy of include/graphs/ that a test may break."""
    target = tmp_path / "graphs"
    shutil.copytree(SPECS, target)
    return target


@pytest.fixture(autouse=True)
def _private_graph_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan cache and value storage of every test under its own tmp_path; no in-process plans carried over."""
    from effopt.graph.compiled import clear_memo

    monkeypatch.setenv("EFFOPT_GRAPH_CACHE_DIR", str(tmp_path / "plan-cache"))
    monkeypatch.setenv("EFFOPT_GRAPH_STORAGE", f"file://{tmp_path}/values")
    clear_memo()
