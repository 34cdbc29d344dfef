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
def _private_graph_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Plan cache and value storage of every test under its own tmp_path; no in-process plans carried over."""
    from effopt.graph.compiled import clear_memo

    monkeypatch.setenv("AIRFLOW__EFFOPT__GRAPH_PLAN_CACHE_DIR", str(tmp_path / "plan-cache"))
    monkeypatch.setenv("AIRFLOW__EFFOPT__GRAPH_STORAGE", f"file://{tmp_path}/values")
    reload_settings()
    clear_memo()
    yield
    monkeypatch.undo()
    reload_settings()


def reload_settings() -> None:
    """Settings are read once per process (as in Airflow); re-read them after changing the environment."""
    from effopt.airflow_settings import get_settings, get_store

    get_settings.cache_clear()
    get_store.cache_clear()
