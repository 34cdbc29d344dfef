"""A GPU inventory written down: a YAML file, or a CSV node list such as the Alibaba trace's.

YAML (a list of nodes, or a mapping with ``nodes:``)::

    nodes:
      - name: gpu-box              # required, unique
        cpu_milli: 32000           # optional (milli-cores), as memory_mib (MiB)
        gpus: 2                    # a count, with the model and the memory of each ...
        model: T4
        gpu_memory_mib: 15360
      - name: a100-0
        gpus:                      # ... or one entry per GPU
          - {index: 0, model: A100-SXM4-40GB, memory_mib: 40960, uuid: GPU-5d1c4a6e}
          - {index: 1, model: A100-SXM4-40GB, memory_mib: 40960, mig: [3g.20gb, 3g.20gb]}
        running:                   # optional: GPU work outside effopt that holds devices
          - {name: notebook, gpus: [0], gpu_milli: 500}

CSV: ``sn,cpu_milli,memory_mib,gpu,model`` (:func:`effopt.gpu.trace.load_nodes`); nodes without GPUs are
left out. An unset file is an empty inventory (no GPUs). Every error names the file, the node and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from effopt.gpu.inventory.base import (
    GpuDevice,
    Inventory,
    InventoryError,
    InventoryNode,
    InventorySource,
    MigSlice,
    RunningRequest,
    mig_model,
)
from effopt.gpu.model import MILLI

NODE_KEYS = frozenset({"name", "cpu_milli", "memory_mib", "gpus", "model", "gpu_memory_mib", "running"})
GPU_KEYS = frozenset({"index", "model", "memory_mib", "uuid", "mig"})
RUNNING_KEYS = frozenset({"name", "gpus", "num_gpu", "gpu_milli", "model"})


class StaticInventory(InventorySource):
    kind = "static"

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None

    def read(self) -> Inventory:
        if self.path is None:
            return Inventory((), self.kind, "[effopt] gpu_inventory_file is not set")
        if not self.path.is_file():
            raise InventoryError(f"{self.path}: no such file ([effopt] gpu_inventory_file)")
        if self.path.suffix.lower() == ".csv":
            return Inventory.of(_csv_nodes(self.path), self.kind, str(self.path))
        return Inventory.of(yaml_nodes(self.path), self.kind, str(self.path))


def _csv_nodes(path: Path) -> list[InventoryNode]:
    from effopt.gpu.trace import TraceError, load_nodes

    try:
        nodes = load_nodes(path, gpu_only=False)
    except TraceError as exc:
        raise InventoryError(str(exc)) from None
    return [InventoryNode(n.name, tuple(GpuDevice(i, n.model) for i in range(n.gpus)), cpu_milli=n.cpu_milli,
                          memory_mib=n.memory_mib) for n in nodes]


def _int(value: Any, where: str, key: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InventoryError(f"{where}: {key} must be a whole number >= {minimum}, got {value!r}")
    return value


def _str(value: Any, where: str, key: str) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or not str(value).strip():
        raise InventoryError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return str(value).strip()


def _check_keys(entry: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise InventoryError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})")


def yaml_nodes(path: Path) -> list[InventoryNode]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InventoryError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if doc is None:
        return []
    entries = doc.get("nodes") if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and set(doc) - {"nodes"}:
        raise InventoryError(f"{path}: unknown top-level key {sorted(set(doc) - {'nodes'})[0]!r} (expected 'nodes')")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise InventoryError(f"{path}: 'nodes' must be a list of nodes")
    nodes, seen = [], set()
    for n, entry in enumerate(entries, start=1):
        where = f"{path}, node {n}"
        if not isinstance(entry, dict):
            raise InventoryError(f"{where}: a node is a mapping with a name and gpus, got {entry!r}")
        name = _str(entry.get("name"), where, "name")
        where = f"{path}, node {name!r}"
        _check_keys(entry, NODE_KEYS, where)
        if name in seen:
            raise InventoryError(f"{where}: the name appears twice")
        seen.add(name)
        nodes.append(_node(entry, name, where))
    return nodes


def _node(entry: Mapping[str, Any], name: str, where: str) -> InventoryNode:
    cpu = _int(entry.get("cpu_milli", 0), where, "cpu_milli")
    mem = _int(entry.get("memory_mib", 0), where, "memory_mib")
    raw = entry.get("gpus", 0)
    gpus: list[GpuDevice] = []
    mig: list[MigSlice] = []
    if isinstance(raw, int) and not isinstance(raw, bool):
        count = _int(raw, where, "gpus")
        if count:
            model = _str(entry.get("model"), where, "model")
            memory = _int(entry.get("gpu_memory_mib", 0), where, "gpu_memory_mib")
            gpus = [GpuDevice(i, model, memory_total_mib=memory) for i in range(count)]
    elif isinstance(raw, list):
        for key in ("model", "gpu_memory_mib"):
            if key in entry:
                raise InventoryError(f"{where}: {key} goes into each GPU entry when gpus is a list")
        for i, g in enumerate(raw):
            gwhere = f"{where}, GPU {i + 1}"
            if not isinstance(g, dict):
                raise InventoryError(f"{gwhere}: a GPU is a mapping with a model, got {g!r}")
            _check_keys(g, GPU_KEYS, gwhere)
            index = _int(g.get("index", i), gwhere, "index")
            profiles = g.get("mig") or []
            if not isinstance(profiles, list):
                raise InventoryError(f"{gwhere}: mig must be a list of MIG profiles such as [3g.20gb, 3g.20gb]")
            memory = _int(g.get("memory_mib", 0), gwhere, "memory_mib")
            gpus.append(GpuDevice(index, _str(g.get("model"), gwhere, "model"), str(g.get("uuid") or ""), memory,
                                  mig_enabled=bool(profiles)))
            mig += [MigSlice(_str(p, gwhere, "mig").removeprefix("mig-"), index) for p in profiles]
    else:
        raise InventoryError(f"{where}: gpus must be a count or a list of GPUs, got {raw!r}")
    try:
        node = InventoryNode(name, tuple(gpus), tuple(mig), cpu_milli=cpu, memory_mib=mem)
    except InventoryError as exc:
        raise InventoryError(f"{where}: {exc}") from None
    running = tuple(_running(r, node, f"{where}, running {k + 1}") for k, r in enumerate(entry.get("running") or []))
    return InventoryNode(name, node.gpus, node.mig, running, cpu, mem)


def _running(entry: Any, node: InventoryNode, where: str) -> RunningRequest:
    if not isinstance(entry, dict):
        raise InventoryError(f"{where}: a running request is a mapping, got {entry!r}")
    _check_keys(entry, RUNNING_KEYS, where)
    units = node.units()
    model = str(entry.get("model") or "")
    if model and model not in units and mig_model(model) in units:
        model = mig_model(model)
    if model and model not in units:
        raise InventoryError(f"{where}: model {model!r} is not on this node (it has {', '.join(units) or 'none'})")
    gpus = entry.get("gpus", [])
    if not isinstance(gpus, list):
        raise InventoryError(f"{where}: gpus must be a list of device indices")
    gpus = [_int(g, where, "gpus") for g in gpus]
    num = _int(entry.get("num_gpu", len(gpus) or 1), where, "num_gpu", 1)
    milli = _int(entry.get("gpu_milli", MILLI), where, "gpu_milli", 1)
    if milli > MILLI or (num > 1 and milli != MILLI):
        raise InventoryError(f"{where}: gpu_milli is thousandths of one GPU (1..{MILLI}; {MILLI} with num_gpu > 1)")
    if gpus and len(gpus) != num:
        raise InventoryError(f"{where}: {len(gpus)} GPU indices for num_gpu={num}")
    return RunningRequest(_str(entry.get("name", "running"), where, "name"), num, milli, model, tuple(gpus))
