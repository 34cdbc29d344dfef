"""Usage traces in CSV files: ``timestamp, container, value`` (plain or gzip).

The Alibaba GenAI trace (``../shared/data/alibaba-genai-2026/``) names its
columns ``timestamp_anon, container_ip, value``; both spellings are accepted.
The file name says what the values are:

========================================  ============  =================================
file stem                                 resource      unit
========================================  ============  =================================
``pod_memory_util``                       memory        fraction of the deployed limit
``pod_memory_*bytes*``                    memory        bytes
``pod_gpu_memory_used_bytes``             gpu_memory    bytes
``pod_gpu_duty_cycle`` / ``*gpu_util*``   gpu_util      percent
``*cpu*``                                 cpu           cores
========================================  ============  =================================

Every container is one workload (the trace has no grouping).
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from pathlib import Path

import numpy as np

from effopt.metrics.series import ResourceKind, UsageSeries, check_resource, make_series

TIMESTAMP_COLUMNS = ("timestamp", "timestamp_anon")
CONTAINER_COLUMNS = ("container", "container_ip")
VALUE_COLUMNS = ("value",)


def metric_of_file(path: Path) -> tuple[ResourceKind, str]:
    """(resource kind, unit) a trace file holds, from its name."""
    stem = path.name.split(".")[0].lower()
    if "gpu" in stem and "mem" in stem:
        return "gpu_memory", "bytes"
    if "gpu" in stem and ("duty" in stem or "util" in stem):
        return "gpu_util", "percent"
    if "mem" in stem:
        return "memory", "fraction" if "util" in stem else "bytes"
    if "cpu" in stem:
        return "cpu", "cores"
    raise ValueError(f"{path}: cannot tell the metric from the file name (expected a name such as "
                     "pod_memory_util, pod_gpu_memory_used_bytes, pod_gpu_duty_cycle or pod_cpu_usage)")


def find_trace_file(path: str | Path, resource: str) -> Path:
    """``path`` itself when it is a file, else the file in directory ``path`` holding ``resource``."""
    kind = check_resource(resource)
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(f"trace {p} does not exist")
    found: list[Path] = []
    for f in sorted(p.iterdir()):
        if not f.name.endswith((".csv", ".csv.gz")):
            continue
        try:
            if metric_of_file(f)[0] == kind:
                found.append(f)
        except ValueError:
            continue
    if not found:
        raise FileNotFoundError(f"no {kind} trace file (*.csv or *.csv.gz) in {p}")
    if len(found) > 1:
        raise ValueError(f"several {kind} trace files in {p}: {', '.join(f.name for f in found)}; pass one file")
    return found[0]


def _column(header: list[str], names: tuple[str, ...], path: Path) -> int:
    for i, h in enumerate(header):
        if h.strip().lower() in names:
            return i
    raise ValueError(f"{path}: no column {' or '.join(names)} in header {header}")


def read_trace(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(timestamps, container ids, values) of a trace file; unparsable values become NaN (and are reported).

    A damaged file (a truncated or non-gzip ``.gz``, a field too large to be CSV, bytes that are not UTF-8)
    is a ``ValueError`` naming the file and what is wrong with it.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
            reader = csv.reader(text)
            try:
                header = next(reader)
            except StopIteration:
                raise ValueError(f"{path} is empty (no header)") from None
            it, ic, iv = (_column(header, names, path)
                          for names in (TIMESTAMP_COLUMNS, CONTAINER_COLUMNS, VALUE_COLUMNS))
            rows = [r for r in reader if r]
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{path} is not a complete gzip file ({type(exc).__name__}: {exc})") from None
    except csv.Error as exc:
        raise ValueError(f"{path} is not a valid CSV file: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    width = max(it, ic, iv) + 1
    short = [n for n, r in enumerate(rows, start=2) if len(r) < width]
    if short:
        raise ValueError(f"{path}: line {short[0]} has fewer than {width} columns")
    ids = np.array([r[ic] for r in rows], dtype=object)
    ts = np.array([_float(r[it]) for r in rows], dtype=float)
    vs = np.array([_float(r[iv]) for r in rows], dtype=float)
    return ts, ids, vs


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


class TraceSource:
    """A :class:`~effopt.metrics.series.MetricsSource` over trace CSV files.

    ``path`` is one file or a directory holding one file per metric (picked by
    :func:`find_trace_file`).  ``min_history_s`` only sets when a series is
    reported as having too little history.
    """

    def __init__(self, path: str | Path, *, min_history_s: float = 3 * 3600.0) -> None:
        self.path = Path(path)
        self.min_history_s = min_history_s
        if not self.path.exists():
            raise FileNotFoundError(f"trace {self.path} does not exist")
        self._issues: dict[str, str] = {}

    def issues(self) -> list[str]:
        """Rows that belong to no container (an empty id), per file read so far."""
        return list(self._issues.values())

    def resources(self) -> tuple[ResourceKind, ...]:
        files = [self.path] if self.path.is_file() else sorted(self.path.iterdir())
        kinds: list[ResourceKind] = []
        for f in files:
            try:
                kind = metric_of_file(f)[0]
            except ValueError:
                continue
            if kind not in kinds:
                kinds.append(kind)
        return tuple(kinds)

    def series(self, resource: ResourceKind) -> list[UsageSeries]:
        file = find_trace_file(self.path, resource)
        kind, unit = metric_of_file(file)
        if kind != resource:
            raise ValueError(f"{file} holds {kind}, not {resource}")
        ts, ids, vs = read_trace(file)
        named = np.array([bool(str(i).strip()) for i in ids], dtype=bool) if ids.size else np.ones(0, dtype=bool)
        if not named.all():
            # A sample without a container id belongs to no workload: dropped and reported, never a nameless one.
            self._issues[file.name] = (f"{file.name}: {int((~named).sum())} row(s) without a container id "
                                       "dropped")
            ts, ids, vs = ts[named], ids[named], vs[named]
        if not ids.size:
            return []
        order = np.argsort(ids, kind="stable")
        ids, ts, vs = ids[order], ts[order], vs[order]
        starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
        ends = np.append(starts[1:], ids.size)
        out = []
        for a, b in zip(starts, ends, strict=True):
            cid = str(ids[a])
            limit = 1.0 if unit == "fraction" else None
            out.append(make_series(cid, cid, kind, ts[a:b], vs[a:b], unit=unit, limit=limit,
                                   min_history_s=self.min_history_s, labels={"trace": file.name}))
        return out
