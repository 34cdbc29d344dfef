"""Retention of large graph values in object storage.

Compiled graph DAGs put values too large for XCom under
``<base>/<dag_id>/<run>/<task_id>/<name>.<format>`` (:mod:`effopt.graph.airflow`).
Nothing else removes them, so :func:`prune_runs` does, one *run* at a time:
a run's directory is removed when every file in it is older than the cutoff,
so a run that is still being (re)executed keeps all of its values, and a
downstream task never finds half of its run's inputs gone.

Plain Python on any ``pathlib``-like object (``pathlib.Path``, Airflow's
``ObjectStoragePath``): ``iterdir``, ``is_dir``, ``exists``, ``stat``,
``unlink`` and ``rmdir``.  No Airflow import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class PrunedRun:
    """A run directory that was removed (or would be, in a dry run)."""

    path: str
    files: int
    bytes: int
    newest_mtime: float | None  # None: the directory held no file


@dataclass
class RetentionReport:
    cutoff: float
    dry_run: bool
    runs_seen: int = 0
    runs_kept: int = 0
    removed: list[PrunedRun] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def files_removed(self) -> int:
        return sum(r.files for r in self.removed)

    @property
    def bytes_removed(self) -> int:
        return sum(r.bytes for r in self.removed)

    def as_dict(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff, "dry_run": self.dry_run, "runs_seen": self.runs_seen,
                "runs_kept": self.runs_kept, "runs_removed": len(self.removed),
                "files_removed": self.files_removed, "bytes_removed": self.bytes_removed,
                "removed": [asdict(r) for r in self.removed], "errors": list(self.errors)}


def _files(directory: Any) -> Iterator[Any]:
    for entry in sorted(directory.iterdir(), key=str):
        if entry.is_dir():
            yield from _files(entry)
        else:
            yield entry


def _directories_bottom_up(directory: Any) -> Iterator[Any]:
    for entry in sorted(directory.iterdir(), key=str):
        if entry.is_dir():
            yield from _directories_bottom_up(entry)
    yield directory


def prune_runs(
    base: Any,
    *,
    older_than: float,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
) -> RetentionReport:
    """Remove the run directories ``base/<dag_id>/<run>`` whose files are all older than ``older_than``.

    ``older_than`` is an epoch time (modification times are compared with it).
    A run with one file at or after it is kept whole.  With ``dry_run`` nothing
    is removed and the report lists what would be.  A file or directory that
    cannot be removed is reported in ``errors`` and the rest goes on (the next
    prune finishes the run).  ``progress`` receives a line per DAG directory.
    """
    if math.isnan(older_than):
        raise ValueError("older_than must be a time, got NaN")
    report = RetentionReport(cutoff=older_than, dry_run=dry_run)
    if not base.exists():
        return report
    for dag_dir in sorted((d for d in base.iterdir() if d.is_dir()), key=str):
        before = len(report.removed)
        for run_dir in sorted((d for d in dag_dir.iterdir() if d.is_dir()), key=str):
            report.runs_seen += 1
            stats = [(f, f.stat()) for f in _files(run_dir)]
            newest = max((st.st_mtime for _, st in stats), default=None)
            if newest is not None and newest >= older_than:
                report.runs_kept += 1
                continue
            if not dry_run:
                for f, _ in stats:
                    try:
                        f.unlink()
                    except OSError as exc:
                        report.errors.append(f"{f}: {type(exc).__name__}: {exc}")
                for d in _directories_bottom_up(run_dir):
                    try:
                        d.rmdir()
                    except (OSError, NotImplementedError):  # object stores have no directories to remove
                        pass
            report.removed.append(PrunedRun(str(run_dir), len(stats), sum(int(st.st_size) for _, st in stats),
                                            newest))
        if not dry_run:
            try:
                if not any(True for _ in dag_dir.iterdir()):
                    dag_dir.rmdir()
            except (OSError, NotImplementedError):
                pass
        if progress is not None:
            progress(f"{dag_dir}: {len(report.removed) - before} run(s) {'to remove' if dry_run else 'removed'}")
    return report
