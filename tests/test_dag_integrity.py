"""Every DAG of the bundle imports cleanly, is documented, and does no I/O at import time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DAG_FILES = sorted(p for p in (REPO / "dags").glob("*.py") if not p.name.startswith("_"))

# Parse the bundle in a fresh interpreter with its own AIRFLOW_HOME: the
# parsing process is what the DAG processor runs, and nothing leaks between tests.
PARSE = textwrap.dedent(
    """
    import json, sys
    from airflow.dag_processing.dagbag import DagBag
    events = []
    def audit(event, args):
        if event in ("socket.connect", "socket.getaddrinfo", "sqlite3.connect", "subprocess.Popen", "urllib.Request"):
            events.append([event, repr(args)[:200]])
    dag_file = sys.argv[1]
    sys.addaudithook(audit)
    bag = DagBag(dag_folder=dag_file)
    sys.addaudithook(lambda *a: None)
    io_events = list(events)
    out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "io": io_events, "dags": {}}
    for dag_id, dag in bag.dags.items():
        out["dags"][dag_id] = {
            "tags": sorted(dag.tags or []),
            "doc_md": bool((dag.doc_md or "").strip()),
            "tasks": {t.task_id: {"owner": t.owner, "retries": t.retries} for t in dag.tasks},
        }
    print("RESULT" + json.dumps(out))
    """
)


def _parse(dag_file: Path, tmp_path: Path) -> dict:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "PYTHONPATH": str(REPO / "plugins")}
    res = subprocess.run([sys.executable, "-c", PARSE, str(dag_file)], env=env, capture_output=True, text=True,
                         timeout=300)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line is not None, f"parsing {dag_file.name} crashed:\n{res.stderr[-3000:]}"
    return json.loads(line[len("RESULT"):])


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict[str, dict]:
    return {f.name: _parse(f, tmp_path_factory.mktemp(f.stem)) for f in DAG_FILES}


def test_bundle_has_dag_files():
    assert DAG_FILES, "dags/ holds no DAG files"


@pytest.mark.parametrize("dag_file", [f.name for f in DAG_FILES])
def test_no_import_errors(parsed, dag_file):
    result = parsed[dag_file]
    assert result["import_errors"] == {}
    assert result["dags"], f"{dag_file} defines no DAG"


@pytest.mark.parametrize("dag_file", [f.name for f in DAG_FILES])
def test_dags_have_tags_owner_docs_and_retries(parsed, dag_file):
    for dag_id, dag in parsed[dag_file]["dags"].items():
        assert dag["tags"], f"{dag_id} has no tags"
        assert dag["doc_md"], f"{dag_id} has no doc_md"
        for task_id, task in dag["tasks"].items():
            assert task["owner"] and task["owner"] != "airflow", f"{dag_id}.{task_id} has the default owner"
            assert task["retries"] >= 1, f"{dag_id}.{task_id} has no retries"


@pytest.mark.parametrize("dag_file", [f.name for f in DAG_FILES])
def test_no_network_or_database_work_at_import(parsed, dag_file):
    assert parsed[dag_file]["io"] == [], f"{dag_file} does I/O while being parsed"


def test_audit_hook_catches_import_time_io(tmp_path):
    """The I/O check above must be able to fail: a DAG file that connects at import is caught."""
    bad = tmp_path / "bad_dag.py"
    bad.write_text(textwrap.dedent(
        """
        import socket, sqlite3
        from airflow.sdk import dag
        sqlite3.connect(":memory:")
        try:
            socket.create_connection(("127.0.0.1", 9), timeout=0.2)
        except OSError:
            pass
        @dag(schedule=None, tags=["x"], doc_md="x", default_args={"owner": "x", "retries": 1})
        def bad_dag():
            pass
        bad_dag()
        """
    ))
    events = {e for e, _ in _parse(bad, tmp_path)["io"]}
    assert {"sqlite3.connect", "socket.connect"} <= events
