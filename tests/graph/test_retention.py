"""Retention of graph values in object storage: whole runs go once all their values are old."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
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
    from effopt.operators.maintenance import prune_graph_values

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


# -- object-store semantics -------------------------------------------------------------------
class _ObjectStoreFs:
    """fsspec's in-memory filesystem given an object store's semantics (directories exist only as key
    prefixes, times as ``LastModified``), a stand-in for S3 at the library boundary: no S3 server runs
    here with s3fs installed."""

    @staticmethod
    def make(times: dict[str, float] | None):
        from fsspec.implementations.memory import MemoryFileSystem

        class ObjectStore(MemoryFileSystem):
            def mkdir(self, path, create_parents=True, **kwargs):
                pass

            def makedirs(self, path, exist_ok=False):
                pass

            def rmdir(self, path):
                raise FileNotFoundError(path)  # no directory objects

            def _with_time(self, info):
                if info.get("type") == "file":
                    info.pop("created", None)
                    if times is not None:  # None: the store reports no time at all
                        info["LastModified"] = datetime.fromtimestamp(times[info["name"].rsplit("/", 1)[-1]], UTC)
                return info

            def info(self, path, **kwargs):
                return self._with_time(super().info(path, **kwargs))

            def ls(self, path, detail=True, **kwargs):
                out = super().ls(path, detail=detail, **kwargs)
                return [self._with_time(dict(o)) for o in out] if detail else out

        return ObjectStore()


@pytest.fixture
def object_store():
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.io import attach
    from airflow.sdk.io import store as io_store
    from fsspec.implementations.memory import MemoryFileSystem

    def make(files: dict[str, float] | None, names: list[str]):
        fs = _ObjectStoreFs.make(files)
        io_store._STORE_CACHE.pop("memory", None)  # Airflow keeps the first store attached per protocol
        attach("memory", fs=fs)
        for name in names:
            fs.pipe_file(f"/effopt-test-bucket/graph/{name}", b"x" * 100)
        return ObjectStoragePath("memory:///effopt-test-bucket/graph")

    yield make
    io_store._STORE_CACHE.pop("memory", None)
    for key in [k for k in MemoryFileSystem.store if k.startswith("/effopt-test-bucket")]:
        del MemoryFileSystem.store[key]


def test_object_store_runs_go_whole_and_the_prune_goes_on_after_them(object_store):
    now = time.time()
    times = {"a.npy": now - 30 * DAY, "b.npy": now - 20 * DAY, "c.npy": now - 1 * DAY, "d.npy": now - 9 * DAY}
    base = object_store(times, ["effopt_graph_x/run_1/t/a.npy", "effopt_graph_x/run_2/t/b.npy",
                                "effopt_graph_x/run_3/t/c.npy", "effopt_graph_y/run_1/t/d.npy"])
    report = prune_runs(base, older_than=now - 7 * DAY, dag_prefix="effopt_graph_")
    assert report.errors == []
    assert sorted(r.path.rsplit("graph/", 1)[-1] for r in report.removed) == [
        "effopt_graph_x/run_1", "effopt_graph_x/run_2", "effopt_graph_y/run_1"]
    assert [str(p).rsplit("graph/", 1)[-1] for p in base.rglob("*") if p.is_file()] == ["effopt_graph_x/run_3/t/c.npy"]


def test_a_store_that_reports_no_time_keeps_every_run(object_store):
    """Airflow reads a missing time as 0: that must not make a run 56 years old."""
    base = object_store(None, ["effopt_graph_x/run_1/t/a.npy"])
    report = prune_runs(base, older_than=time.time() - 7 * DAY, dag_prefix="effopt_graph_")
    assert report.removed == [] and report.runs_kept == 1
    assert "reports no modification time" in report.errors[0]
    assert (base / "effopt_graph_x/run_1/t/a.npy").exists()


def test_only_effopt_graph_directories_are_pruned_and_links_are_not_followed(tmp_path):
    base = tmp_path / "values"
    put(base, "backups/2024/db.dump", b"keep", 400)  # not effopt's: shares the bucket
    outside = put(tmp_path, "outside/precious.bin", b"keep", 400)
    put(base, "effopt_graph_a/run_old/load/prices.npy", b"x", 30)
    link = base / "effopt_graph_a/run_old/load/link"
    link.symlink_to(outside.parent, target_is_directory=True)
    old = time.time() - 30 * DAY
    os.utime(link, (old, old), follow_symlinks=False)
    report = prune_runs(base, older_than=time.time() - 7 * DAY, dag_prefix="effopt_graph_")
    assert (base / "backups/2024/db.dump").exists() and outside.exists()
    assert not (base / "effopt_graph_a").exists()  # the link itself went with its run
    assert len(report.removed) == 1 and report.errors == []


def test_a_file_that_cannot_be_removed_keeps_its_run_out_of_removed(tmp_path, monkeypatch):
    base = tmp_path / "values"
    layout(base)
    real_unlink = Path.unlink

    def unlink(self, *args, **kwargs):
        if self.name == "model.pickle":
            raise PermissionError(13, "Permission denied")
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink)
    report = prune_runs(base, older_than=time.time() - 7 * DAY)
    assert [Path(r.path).relative_to(base).as_posix() for r in report.removed] == ["effopt_graph_b/run_old"]
    assert report.files_removed == 2  # prices.npy of graph_a's old run and graph_b's file, not model.pickle
    assert any("model.pickle: could not remove it: PermissionError" in e for e in report.errors)
    assert (base / "effopt_graph_a/run_old/train/model.pickle").exists()


def test_a_task_starting_marks_its_run_so_old_inputs_are_kept(tmp_path):
    from effopt.graph.retention import RUN_MARKER
    from effopt.hooks.graph_values import ObjectStorageValueStore

    base = tmp_path / "values"
    put(base, "effopt_graph_a/run_old/load/prices.npy", b"x", 30)
    ObjectStorageValueStore(f"file://{base}").mark_run_active("effopt_graph_a/run_old")  # a cleared task restarts
    assert (base / "effopt_graph_a/run_old" / RUN_MARKER).is_file()
    report = prune_runs(base, older_than=time.time() - 7 * DAY, dag_prefix="effopt_graph_")
    assert report.removed == [] and (base / "effopt_graph_a/run_old/load/prices.npy").exists()
