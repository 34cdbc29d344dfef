"""Retention of large graph values in object storage.

Compiled graph DAGs put values too large for XCom under
``<base>/<dag_id>/<run>/<task_id>/<name>.<format>`` (:mod:`effopt.compiler`),
and every task of a run first refreshes the run's marker file
(:data:`RUN_MARKER`).  Nothing else removes those files, so :func:`prune_runs`
does, one *run* at a time: a run's directory is removed only when every file
in it, the marker included, is older than the cutoff.  A run one of whose
tasks started (or was cleared and re-run) within the retention therefore
keeps all of its values, and a prune never leaves half a run it removed on
purpose.  One window remains: a task of a run older than the retention that
starts while that very run is being removed.

Only directories whose name starts with ``dag_prefix`` are looked at, and
symbolic links are never followed, so storage shared with other data is safe.
A file whose modification time the store does not report keeps its run (and
is reported): an unknown age is never taken for an old one.

Plain Python on any ``pathlib``-like object (``pathlib.Path``, Airflow's
``ObjectStoragePath``): ``iterdir``, ``is_dir``, ``is_symlink``, ``exists``,
``stat``, ``unlink`` and ``rmdir``.  No Airflow import.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

#: Written (empty) by every graph task into its run's directory before it reads its inputs.
RUN_MARKER = ".effopt-run-active"


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
    files_removed: int = 0  # files actually removed (or that would be, in a dry run)
    bytes_removed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff, "dry_run": self.dry_run, "runs_seen": self.runs_seen,
                "runs_kept": self.runs_kept, "runs_removed": len(self.removed),
                "files_removed": self.files_removed, "bytes_removed": self.bytes_removed,
                "removed": [asdict(r) for r in self.removed], "errors": list(self.errors)}


def _is_link(path: Any) -> bool:
    try:
        return bool(path.is_symlink())
    except (NotImplementedError, OSError, AttributeError):  # object stores have no links
        return False


def _walk(directory: Any, files: list[Any], dirs: list[Any]) -> None:
    """Files under ``directory`` and its directories, deepest first.  A link counts as a file: removing
    it removes the link, never what it points to."""
    for entry in sorted(directory.iterdir(), key=str):
        if not _is_link(entry) and entry.is_dir():
            _walk(entry, files, dirs)
        else:
            files.append(entry)
    dirs.append(directory)


def _stat(path: Any) -> Any:
    """The path's own stat (a link's, not its target's)."""
    return path.lstat() if _is_link(path) else path.stat()


def _has_directories(base: Any) -> bool:
    """Whether directories exist apart from their files (local disks; not object stores' key prefixes)."""
    return isinstance(base, pathlib.Path) or getattr(base, "protocol", "") in ("file", "local")


def _mtime(stat: Any) -> float | None:
    value = getattr(stat, "st_mtime", None)
    try:
        value = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    # Airflow's stat reports 0 when the store gives no time: unknown, not 1970.
    return value if math.isfinite(value) and value > 0 else None


def _dirs(directory: Any) -> list[Any]:
    """The directories in ``directory``, links left out (storage a link leads to is not ours)."""
    return sorted((p for p in directory.iterdir() if not _is_link(p) and p.is_dir()), key=str)


def _run_dirs(base: Any, dag_prefix: str, report: RetentionReport) -> Iterator[tuple[Any, list[Any]]]:
    for dag_dir in _dirs(base):
        if not dag_dir.name.startswith(dag_prefix):
            continue
        try:
            runs = _dirs(dag_dir)
        except OSError as exc:
            report.errors.append(f"{dag_dir}: could not list it: {type(exc).__name__}: {exc}")
            continue
        yield dag_dir, runs


def prune_runs(
    base: Any,
    *,
    older_than: float,
    dag_prefix: str = "",
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
) -> RetentionReport:
    """Remove the run directories ``base/<dag_id>/<run>`` whose files are all older than ``older_than``.

    ``older_than`` is an epoch time (modification times are compared with it);
    only DAG directories whose name starts with ``dag_prefix`` are pruned.  A
    run with a file at or after the cutoff, or with a file of unknown age, is
    kept whole.  With ``dry_run`` nothing is removed and the report lists what
    would be.  A run that cannot be listed, or a file that cannot be removed,
    goes to ``errors`` and the rest goes on (the next prune finishes a run
    left half removed); ``removed`` lists only runs removed whole.
    ``progress`` receives a line per DAG directory.
    """
    if math.isnan(older_than):
        raise ValueError("older_than must be a time, got NaN")
    report = RetentionReport(cutoff=older_than, dry_run=dry_run)
    if not base.exists():
        return report
    directories = _has_directories(base)
    for dag_dir, runs in _run_dirs(base, dag_prefix, report):
        before = len(report.removed)
        for run_dir in runs:
            _prune_run(run_dir, older_than, dry_run, directories, report)
        if not dry_run and directories:
            _remove_if_empty(dag_dir)
        if progress is not None:
            progress(f"{dag_dir}: {len(report.removed) - before} run(s) {'to remove' if dry_run else 'removed'}")
    return report


@dataclass(frozen=True)
class _RunFiles:
    """What one run directory holds: its files with their stats, its directories (deepest first), and the
    newest modification time (of its files; of the directory itself when it holds none)."""

    stats: list[tuple[Any, Any]]
    dirs: list[Any]
    newest: float


def _read_run(run_dir: Any, report: RetentionReport) -> _RunFiles | None:
    """The run's files and times; None, with the reason in ``report.errors``, when the run cannot be listed
    or the store does not report a modification time (the run is then kept)."""
    files: list[Any] = []
    dirs: list[Any] = []
    try:
        _walk(run_dir, files, dirs)
        stats = [(f, _stat(f)) for f in files]
        # An empty run directory (its first value about to be written) is as old as the directory.
        times = [_mtime(st) for _, st in stats] if stats else [_mtime(run_dir.stat())]
    except OSError as exc:  # removed or changed while we looked: leave it to the next prune
        report.errors.append(f"{run_dir}: could not list it: {type(exc).__name__}: {exc}")
        return None
    if any(t is None for t in times):
        report.errors.append(f"{run_dir}: the store reports no modification time; kept")
        return None
    return _RunFiles(stats, dirs, max(times))  # type: ignore[type-var]


def _remove_files(stats: list[tuple[Any, Any]], dry_run: bool, report: RetentionReport) -> tuple[int, int, bool]:
    """Unlink the files (not in a dry run): (files removed, their bytes, whether one could not be removed)."""
    removed_files = removed_bytes = 0
    failed = False
    for f, st in stats:
        try:
            if not dry_run:
                f.unlink()
        except OSError as exc:
            failed = True
            report.errors.append(f"{f}: could not remove it: {type(exc).__name__}: {exc}")
        else:
            removed_files += 1
            removed_bytes += int(st.st_size)
    return removed_files, removed_bytes, failed


def _remove_dirs(dirs: list[Any], report: RetentionReport) -> bool:
    """Remove the (emptied) directories, deepest first; False, with the error reported, at the first failure."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError as exc:
            report.errors.append(f"{d}: could not remove it: {type(exc).__name__}: {exc}")
            return False
    return True


def _prune_run(run_dir: Any, older_than: float, dry_run: bool, directories: bool, report: RetentionReport) -> None:
    """Remove one run directory whole when all its files are older than ``older_than``; count it in ``report``.

    Steps: read the run's files and times (an unreadable run is kept), keep it when its newest file is at
    or after the cutoff, remove its files, then its directories, and list it as removed when nothing failed.
    """
    report.runs_seen += 1
    run = _read_run(run_dir, report)
    if run is None or run.newest >= older_than:
        report.runs_kept += 1
        return
    removed_files, removed_bytes, failed = _remove_files(run.stats, dry_run, report)
    if not dry_run and directories and not failed:
        failed = not _remove_dirs(run.dirs, report)
    report.files_removed += removed_files
    report.bytes_removed += removed_bytes
    if not failed:
        report.removed.append(PrunedRun(str(run_dir), removed_files, removed_bytes,
                                        run.newest if run.stats else None))


def _remove_if_empty(dag_dir: Any) -> None:
    """Remove a DAG directory left without runs."""
    try:
        if not any(True for _ in dag_dir.iterdir()):
            dag_dir.rmdir()
    except OSError:
        pass  # a run was just added, or it is already gone
