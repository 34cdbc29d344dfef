"""Loaders for the node and pod CSVs of the Alibaba GPU trace (``cluster-trace-gpu-v2023``, the FGD paper's).

Nodes: ``sn,cpu_milli,memory_mib,gpu,model``. Pods: ``name,cpu_milli,memory_mib,num_gpu,gpu_milli`` and an
optional ``gpu_spec`` (allowed GPU models separated by ``|``, empty: any); other columns (qos, phase, times)
are ignored, as the published experiment ignores them. A bad row raises :class:`TraceError`, which names
the file, the row (1 = the first line after the header) and the column.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from effopt.gpu.model import MILLI, GpuRequest, Node

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")


class TraceError(ValueError):
    """A trace file that cannot be read: names the file, row and column."""

    def __init__(self, path: str | Path, message: str, row: int | None = None, column: str | None = None) -> None:
        self.path, self.row, self.column = str(path), row, column
        where = self.path
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")


def _rows(path: str | Path, required: Sequence[str]) -> Iterable[tuple[int, dict[str, str]]]:
    p = Path(path)
    if not p.is_file():
        raise TraceError(p, "no such file")
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise TraceError(p, f"missing column(s) {', '.join(missing)} (header: {','.join(header) or 'empty'})",
                             column=missing[0])
        for n, row in enumerate(reader, start=1):
            if None in row:
                raise TraceError(p, f"{len(header) + len(row[None])} fields, the header has {len(header)}", row=n)
            yield n, row


def _int(path: str | Path, row: int, column: str, text: str | None) -> int:
    value = (text or "").strip()
    try:
        number = int(value)
    except ValueError:
        try:
            f = float(value)
        except ValueError:
            raise TraceError(path, f"{value!r} is not a number", row, column) from None
        if not f.is_integer():
            raise TraceError(path, f"{value!r} is not a whole number", row, column) from None
        number = int(f)
    if number < 0:
        raise TraceError(path, f"{number} is negative", row, column)
    return number


def load_nodes(path: str | Path, gpu_only: bool = True) -> list[Node]:
    """The node list; ``gpu_only`` keeps the GPU nodes only (the published cluster: 1,213 nodes, 6,212 GPUs)."""
    nodes: list[Node] = []
    seen: set[str] = set()
    for n, row in _rows(path, NODE_COLUMNS):
        name = (row["sn"] or "").strip()
        if not name:
            raise TraceError(path, "empty node name", n, "sn")
        if name in seen:
            raise TraceError(path, f"duplicate node {name!r}", n, "sn")
        seen.add(name)
        cpu = _int(path, n, "cpu_milli", row["cpu_milli"])
        mem = _int(path, n, "memory_mib", row["memory_mib"])
        gpus = _int(path, n, "gpu", row["gpu"])
        model = (row["model"] or "").strip()
        if gpus and not model:
            raise TraceError(path, f"{gpus} GPUs without a GPU model", n, "model")
        if gpus == 0 and gpu_only:
            continue
        nodes.append(Node(name, cpu, mem, gpus, model if gpus else ""))
    if not nodes:
        raise TraceError(path, "no GPU nodes" if gpu_only else "no nodes")
    return nodes


def load_pods(path: str | Path, known_models: Iterable[str] | None = None) -> list[GpuRequest]:
    """The pod list as requests, in file order. ``known_models``: the GPU models of the cluster; a
    ``gpu_spec`` naming any other model is an error (a typo would otherwise fail every such pod)."""
    known = None if known_models is None else set(known_models)
    pods: list[GpuRequest] = []
    for n, row in _rows(path, POD_COLUMNS):
        name = (row["name"] or "").strip() or f"row-{n}"
        cpu = _int(path, n, "cpu_milli", row["cpu_milli"])
        mem = _int(path, n, "memory_mib", row["memory_mib"])
        num = _int(path, n, "num_gpu", row["num_gpu"])
        milli = _int(path, n, "gpu_milli", row["gpu_milli"])
        if num == 0:
            milli = 0  # the published simulator ignores gpu_milli of a CPU-only pod
        elif milli == 0:
            raise TraceError(path, f"num_gpu={num} with gpu_milli=0", n, "gpu_milli")
        elif milli > MILLI:
            raise TraceError(path, f"{milli} is more than one GPU ({MILLI}) per GPU", n, "gpu_milli")
        elif num > 1 and milli != MILLI:
            raise TraceError(path, f"a {num}-GPU pod must take whole GPUs ({MILLI}), got {milli}", n, "gpu_milli")
        spec = (row.get("gpu_spec") or "").strip()
        models = tuple(m.strip() for m in spec.split("|") if m.strip()) if num else ()
        if known is not None:
            unknown = [m for m in models if m not in known]
            if unknown:
                raise TraceError(path, f"unknown GPU model {unknown[0]!r} (the cluster has "
                                 f"{', '.join(sorted(known)) or 'no GPU models'})", n, "gpu_spec")
        pods.append(GpuRequest(cpu, mem, num, milli, models, name))
    if not pods:
        raise TraceError(path, "no pods")
    return pods
