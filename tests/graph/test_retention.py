"""Retention of graph values in object storage: whole runs go once all their values are old."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from effopt.graph.retention import prune_runs
from tests.graph.conftest import reload_settings

DAY = 86400.0


def put(base: Path, rel: str, data: bytes, age_days: float) -> Path:
    path = base / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    t = time.time() - age_days * DAY
    os.utime(path, (t, t))
    return path


def layout(base: Path) -> None:
    put(base, "effopt_graph_a/run_old/load/prices.npy", b"x" * 1000, 10)
    put(base, "effopt_graph_a/run_old/train/model.pickle", b"y" * 500, 9)
    # one value of this run was written (re-run) yesterday: the whole run stays
    put(base, "effopt_graph_a/run_mixed/load/prices.npy", b"x" * 1000, 10)
    put(base, "effopt_graph_a/run_mixed/train/model.pickle", b"y" * 500, 1)
    put(base, "effopt_graph_b/run_old/load/prices.json", b"[1]", 30)


def files(base: Path) -> list[str]:
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def test_runs_whose_values_are_all_older_than_the_cutoff_are_removed_whole(tmp_path):
    base = tmp_path / "values"
    layout(base)
    lines: list[str] = []
    report = prune_runs(base, older_than=time.time() - 7 * DAY, progress=lines.append)
    assert files(base) == ["effopt_graph_a/run_mixed/load/prices.npy", "effopt_graph_a/run_mixed/train/model.pickle"]
    assert not (base / "effopt_graph_a" / "run_old").exists()
    assert not (base / "effopt_graph_b").exists()  # its only run went: the DAG directory goes too
    assert (report.runs_seen, report.runs_kept, len(report.removed)) == (3, 1, 2)
    assert (report.files_removed, report.bytes_removed) == (3, 1503)
    assert sorted(Path(r.path).relative_to(base).as_posix() for r in report.removed) == [
        "effopt_graph_a/run_old", "effopt_graph_b/run_old"]
    assert report.errors == [] and len(lines) == 2 and "1 run(s) removed" in lines[0]


def test_dry_run_removes_nothing_and_reports_what_would_go(tmp_path):
    base = tmp_path / "values"
    layout(base)
    before = files(base)
    report = prune_runs(base, older_than=time.time() - 7 * DAY, dry_run=True)
    assert files(base) == before
    assert (len(report.removed), report.files_removed, report.as_dict()["dry_run"]) == (2, 3, True)


def test_nothing_stored_yet_and_a_bad_cutoff(tmp_path):
    assert prune_runs(tmp_path / "absent", older_than=time.time()).as_dict()["runs_seen"] == 0
    with pytest.raises(ValueError, match="NaN"):
        prune_runs(tmp_path, older_than=float("nan"))


def test_airflow_adapter_on_object_storage_uses_the_configured_storage_and_retention(tmp_path, monkeypatch):
    """Through Airflow's ObjectStoragePath on the ``[effopt] graph_storage`` the graph conftest sets."""
    from effopt.graph.airflow import prune_graph_values

    layout(tmp_path / "values")
    monkeypatch.setenv("AIRFLOW__EFFOPT__GRAPH_RETENTION_DAYS", "20")
    reload_settings()
    out = prune_graph_values()
    assert out["retention_days"] == 20.0 and out["storage"] == f"file://{tmp_path}/values"
    assert [Path(r["path"]).name for r in out["removed"]] == ["run_old"]  # only graph_b's 30-day-old run
    assert not (tmp_path / "values" / "effopt_graph_b").exists()
    assert prune_graph_values(0)["skipped"] == "retention is off"
    assert len(files(tmp_path / "values")) == 4
    with pytest.raises(ValueError, match="days >= 0"):
        prune_graph_values(-1)
