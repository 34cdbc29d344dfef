"""GPU leases: which task holds which devices, placed by the placement engine, shared by every worker.

A lease is a request (GPUs, thousandths of each, models, memory) placed on concrete devices of the inventory
by the configured policy (:func:`effopt.gpu.policies.get_policy`), held by one *holder* (a task try: dag, task,
run, map index, try) until it is released or its time to live passes without a renewal. The allocation state
lives in a backend shared by all workers:

* :class:`RedisLeaseBackend` (a redis client, e.g. of ``effopt_redis``): each operation is one Lua script, so it
  is atomic on the server; expiry uses the server's clock;
* :class:`StoreLeaseBackend` (the effopt store): each write is one exclusive transaction (SQLite
  ``BEGIN IMMEDIATE``, a Postgres advisory lock).

:meth:`GpuLeaseManager.acquire` reads the live leases, rebuilds the cluster state from the inventory and them,
places the request, and commits. The commit checks, atomically, that each chosen GPU still has the thousandths
free (another worker may have committed in between); if not, the manager reads again and places again (the
``effopt`` policy does not learn from a retried request). So no GPU is ever over-committed, whatever the race.
A holder asking again gets its lease back (renewed), never a second one. A holder that dies stops renewing,
and its lease expires after the TTL.

Plain Python (no Airflow): the Airflow layer passes in the inventory and the backend's client.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from effopt.gpu.fragmentation import FragmentationIndex, TargetWorkload, cluster_fragmentation_ratio
from effopt.gpu.inventory.base import MIG_PREFIX, Inventory, mig_model
from effopt.gpu.model import MILLI, ClusterState, GpuRequest, Node, NoFit, Placement
from effopt.gpu.policies import EffoptPolicy, Policy, get_policy

HISTORY_MAX = 500  # request types of the newest leases the policy learns from
DEFAULT_SEED = 0  # one seed everywhere: every worker ranks nodes the same way (ties pack the same nodes)
MAX_ATTEMPTS = 50
UNITS = ("gpu", "milli")


class LeaseRequestError(ValueError):
    """A request that can never be placed on this inventory, or is malformed: the message names the item."""


# -- requests, holders, leases --------------------------------------------------------------------------
@dataclass(frozen=True)
class LeaseRequest:
    """``gpus`` GPUs, each ``gpu_milli`` thousandths (None: whole), of ``models`` (empty: any whole-GPU model) with
    at least ``gpu_memory_mib`` memory each, on one of ``nodes`` (empty: any node)."""

    gpus: int = 1
    gpu_milli: int | None = None
    gpu_memory_mib: int = 0
    models: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 1:
            raise LeaseRequestError(f"gpus must be a whole number >= 1, got {self.gpus!r}")
        milli = self.gpu_milli
        if milli is not None and (isinstance(milli, bool) or not isinstance(milli, int) or milli < 1):
            raise LeaseRequestError(f"gpu_milli must be a whole number of thousandths of one GPU (1..{MILLI}), "
                                    f"got {milli!r}")
        if milli is not None and milli > MILLI:
            if self.gpus > 1:
                raise LeaseRequestError(
                    f"gpu_milli={milli} with gpus={self.gpus}: gpu_milli is thousandths of ONE GPU (1..{MILLI}), "
                    f"and a request for {self.gpus} GPUs takes them whole (leave gpu_milli out)")
            raise LeaseRequestError(f"gpu_milli={milli} is more than one GPU ({MILLI}): "
                                    f"ask gpus={math.ceil(milli / MILLI)}"
                                    " instead")
        if milli is not None and self.gpus > 1 and milli != MILLI:
            raise LeaseRequestError(f"gpu_milli={milli} with gpus={self.gpus}: only a one-GPU request can take part of"
                                    " a GPU; a request for more GPUs takes them whole (leave gpu_milli out)")
        if isinstance(self.gpu_memory_mib, bool) or not isinstance(self.gpu_memory_mib, int) or self.gpu_memory_mib < 0:
            raise LeaseRequestError(f"gpu_memory must be >= 0, got {self.gpu_memory_mib!r} MiB")
        object.__setattr__(self, "models", tuple(str(m).strip() for m in self.models if str(m).strip()))
        object.__setattr__(self, "nodes", tuple(str(n) for n in self.nodes if n))

    @property
    def milli(self) -> int:
        """Thousandths of each GPU."""
        return MILLI if self.gpu_milli is None else self.gpu_milli

    @property
    def total_milli(self) -> int:
        return self.gpus * self.milli

    def pool_slots(self, unit: str) -> int:
        """Slots in a pool of ``unit`` (``gpu``: one per GPU, part of a GPU rounds up; ``milli``: thousandths)."""
        if unit not in UNITS:
            raise ValueError(f"pool unit must be one of {', '.join(UNITS)}, got {unit!r}")
        return self.total_milli if unit == "milli" else math.ceil(self.total_milli / MILLI)

    def describe(self) -> str:
        what = f"{self.gpus} GPU{'s' if self.gpus > 1 else ''}" if self.gpu_milli in (None, MILLI) else \
            f"{self.milli} thousandths of a GPU"
        if self.models:
            what += f" ({'|'.join(self.models)})"
        if self.gpu_memory_mib:
            what += f" with >= {self.gpu_memory_mib / 1024:g} GiB each"
        return what

    def to_dict(self) -> dict[str, Any]:
        return {"gpus": self.gpus, "gpu_milli": self.gpu_milli, "gpu_memory_mib": self.gpu_memory_mib,
                "models": list(self.models), "nodes": list(self.nodes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LeaseRequest:
        return cls(int(d.get("gpus", 1)), None if d.get("gpu_milli") is None else int(d["gpu_milli"]),
                   int(d.get("gpu_memory_mib") or 0), tuple(d.get("models") or ()), tuple(d.get("nodes") or ()))


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: one try of one task instance (and where it runs)."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1
    try_number: int = 1
    host: str = ""
    pid: int = 0

    @property
    def key(self) -> str:
        return f"{self.dag_id}|{self.task_id}|{self.run_id}|{self.map_index}|{self.try_number}"

    def to_dict(self) -> dict[str, Any]:
        return {"dag_id": self.dag_id, "task_id": self.task_id, "run_id": self.run_id, "map_index": self.map_index,
                "try_number": self.try_number, "host": self.host, "pid": self.pid}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Holder:
        return cls(str(d.get("dag_id", "")), str(d.get("task_id", "")), str(d.get("run_id", "")),
                   int(d.get("map_index", -1)), int(d.get("try_number", 1)), str(d.get("host") or ""),
                   int(d.get("pid") or 0))


@dataclass(frozen=True)
class Lease:
    """Devices held: ``devices`` (GPU indices, or slice positions of a MIG profile) of inventory node ``node``,
    ``gpu_milli`` thousandths of each. ``unit`` and ``columns`` locate them in the lease cluster."""

    lease_id: str
    holder: str
    node: str
    unit: str
    model: str
    columns: tuple[int, ...]
    devices: tuple[int, ...]
    uuids: tuple[str, ...]
    gpu_milli: int
    request: LeaseRequest
    holder_info: Holder
    acquired_at: float = 0.0
    renewed_at: float = 0.0
    expires_at: float = 0.0

    @property
    def num_gpu(self) -> int:
        return len(self.columns)

    @property
    def mig_profile(self) -> str:
        return self.model[len(MIG_PREFIX):] if self.model.startswith(MIG_PREFIX) else ""

    def visible_devices(self) -> str:
        """``CUDA_VISIBLE_DEVICES``: the devices' UUIDs where known, else their indices.  A MIG slice has no
        index of its own (CUDA would read its position as a whole GPU's): without its UUID this is a
        LeaseRequestError."""
        if self.mig_profile and not all(self.uuids):
            raise LeaseRequestError(
                f"lease {self.lease_id}: the MIG slice(s) {self.model} on node {self.node} have no UUID in the "
                "inventory, and CUDA_VISIBLE_DEVICES needs MIG-<uuid> to address a slice; use the nvml inventory "
                "(it reads them) or run the task as a pod (GpuKubernetesPodOperator asks the MIG resource)")
        return ",".join(u if u else str(d) for d, u in zip(self.devices, self.uuids, strict=True))

    def to_dict(self) -> dict[str, Any]:
        return {"lease_id": self.lease_id, "holder": self.holder, "node": self.node, "unit": self.unit,
                "model": self.model, "columns": list(self.columns), "devices": list(self.devices),
                "uuids": list(self.uuids), "gpu_milli": self.gpu_milli, "request": self.request.to_dict(),
                "holder_info": self.holder_info.to_dict(), "acquired_at": self.acquired_at,
                "renewed_at": self.renewed_at, "expires_at": self.expires_at}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Lease:
        # Lua's cjson writes an empty list as {}: "or ()" reads either as empty.
        return cls(str(d["lease_id"]), str(d["holder"]), str(d["node"]), str(d["unit"]), str(d.get("model") or ""),
                   tuple(int(c) for c in d.get("columns") or ()), tuple(int(x) for x in d.get("devices") or ()),
                   tuple(str(u) for u in d.get("uuids") or ()), int(d["gpu_milli"]),
                   LeaseRequest.from_dict(d.get("request") or {}), Holder.from_dict(d.get("holder_info") or {}),
                   float(d.get("acquired_at") or 0), float(d.get("renewed_at") or 0), float(d.get("expires_at") or 0))

    def shape(self) -> tuple[int, int, tuple[str, ...]]:
        return (self.num_gpu, self.gpu_milli, self.request.models)


@dataclass(frozen=True)
class NoCapacity:
    """The request fits the inventory but not now: ``reason`` says which filters removed every node."""

    reason: str
    request: LeaseRequest

    def __bool__(self) -> bool:
        return False


# -- the cluster a lease is placed on -----------------------------------------------------------------------
@dataclass
class _Unit:
    name: str  # ClusterState node name: the inventory node, or "<node>/<model>" when a node has several models
    node: str
    model: str
    devices: list[tuple[int, str]]  # (device index or slice position, uuid) per GPU column
    memory_mib: int


class LeaseCluster:
    """The inventory as a :class:`ClusterState` (one state node per node and leasable model) with the live leases
    and the work running outside effopt taken out. ``nodes`` restricts it to those inventory nodes."""

    def __init__(self, inventory: Inventory, nodes: Sequence[str] = ()) -> None:
        self.inventory = inventory
        self.units: list[_Unit] = []
        self.warnings: list[str] = []
        for node in inventory.nodes:
            if nodes and node.name not in nodes:
                continue
            by_model = node.units()
            for model, devices in by_model.items():
                name = node.name if len(by_model) == 1 else f"{node.name}/{model}"
                self.units.append(_Unit(name, node.name, model, devices, node.memory_of(model)))
        self._index = {u.name: i for i, u in enumerate(self.units)}
        self.state: ClusterState | None = ClusterState(
            [Node(u.name, 0, 0, len(u.devices), u.model) for u in self.units]) if self.units else None
        self.running_milli: dict[tuple[int, int], int] = {}

    # -- filling the state ------------------------------------------------------------------------------------
    def apply_leases(self, leases: Iterable[Lease]) -> None:
        if self.state is None:
            return
        for lease in leases:
            i = self._index.get(lease.unit)
            if i is None:
                continue  # a lease on another node (outside this cluster's restriction) or a node now gone
            try:
                self.state.apply(Placement(i, lease.unit, lease.columns, lease.gpu_milli,
                                           GpuRequest(0, 0, lease.num_gpu, lease.gpu_milli, (), lease.lease_id)))
            except ValueError as exc:
                self.warnings.append(f"lease {lease.lease_id} of {lease.holder} no longer fits the inventory: {exc}")

    def apply_running(self, live_lease_ids: set[str]) -> None:
        """Work the inventory sees running outside the live leases (on the first free GPUs when the source does
        not say which)."""
        if self.state is None:
            return
        for node in self.inventory.nodes:
            for run in node.running:
                if run.lease_id and run.lease_id in live_lease_ids:
                    continue
                model = run.model or next((u.model for u in self.units if u.node == node.name
                                           and not u.model.startswith(MIG_PREFIX)), "")
                unit = next((i for i, u in enumerate(self.units) if u.node == node.name and u.model == model), None)
                if unit is None:
                    continue
                self._take(unit, run.name, run.num_gpu, run.gpu_milli, run.gpus)

    def _take(self, i: int, name: str, num: int, milli: int, devices: Sequence[int]) -> None:
        st, u = self.state, self.units[i]
        assert st is not None
        if devices:
            cols = [c for c, (d, _) in enumerate(u.devices) if d in devices]
        elif num > 1 or milli >= MILLI:
            cols = [int(c) for c in np.flatnonzero(st.gpu_free[i, : len(u.devices)] == MILLI)[:num]]
        else:
            fits = np.flatnonzero(st.gpu_free[i, : len(u.devices)] >= milli)
            cols = [int(fits[0])] if fits.size else []
        if len(cols) < num:
            self.warnings.append(f"{name} on {u.name}: the inventory lists more GPU work than the node has free")
            return
        try:
            st.apply(Placement(i, u.name, tuple(cols), milli, GpuRequest(0, 0, num, milli, (), name)))
        except ValueError as exc:
            self.warnings.append(f"{name} on {u.name}: {exc}")
            return
        for c in cols:
            self.running_milli[(i, c)] = self.running_milli.get((i, c), 0) + milli

    # -- requests ----------------------------------------------------------------------------------------------
    def whole_models(self) -> list[str]:
        return sorted({u.model for u in self.units if not u.model.startswith(MIG_PREFIX)})

    def all_models(self) -> list[str]:
        return sorted({u.model for u in self.units})

    def resolve_models(self, request: LeaseRequest) -> tuple[str, ...]:
        """The models a request may land on (raises :class:`LeaseRequestError` when none can ever hold it)."""
        known = set(self.inventory.models())
        wanted = []
        for m in request.models:
            if m in known:
                wanted.append(m)
            elif mig_model(m) in known:
                wanted.append(mig_model(m))
            else:
                raise LeaseRequestError(f"unknown GPU model {m!r}: the inventory has "
                                        f"{', '.join(sorted(known)) or 'no GPUs'}")
        here = self.all_models()
        if request.nodes and not self.units:
            raise LeaseRequestError(f"node {', '.join(request.nodes)} has no GPU in the inventory (GPU nodes: "
                                    f"{', '.join(n.name for n in self.inventory.nodes) or 'none'})")
        if not wanted:
            wanted = self.whole_models()
            if not wanted:
                raise LeaseRequestError("the inventory has MIG slices only here "
                                        f"({', '.join(here)}): name one as the request's model")
        else:
            wanted = [m for m in wanted if m in here]
            if not wanted:
                raise LeaseRequestError(f"no GPU of model {'|'.join(request.models)} on "
                                        f"{', '.join(request.nodes) or 'any node'}")
        if request.gpu_memory_mib:
            big = [m for m in wanted if self._memory(m) == 0 or self._memory(m) >= request.gpu_memory_mib]
            if not big:
                most = max(self._memory(m) for m in wanted)
                raise LeaseRequestError(f"no GPU has {request.gpu_memory_mib / 1024:g} GiB of memory "
                                        f"(the largest of {', '.join(wanted)} has {most / 1024:g} GiB)")
            wanted = big
        return tuple(wanted)

    def _memory(self, model: str) -> int:
        known = [u.memory_mib for u in self.units if u.model == model]
        return min(known) if known and all(known) else 0

    def gpu_request(self, request: LeaseRequest) -> GpuRequest:
        """The engine's request (CPU and memory are not leased), checked against what exists."""
        models = self.resolve_models(request)
        most = max((len(u.devices) for u in self.units if u.model in models), default=0)
        if request.gpus > most:
            raise LeaseRequestError(f"{request.gpus} GPUs asked, but no node has more than {most} GPU"
                                    f"{'s' if most != 1 else ''} of {'|'.join(models)}")
        any_model = set(models) == set(self.all_models())
        return GpuRequest(0, 0, request.gpus, request.milli, () if any_model else models)

    def lease_for(self, placement: Placement, request: LeaseRequest, holder: Holder) -> Lease:
        u = self.units[placement.node_index]
        return Lease(secrets.token_hex(8), holder.key, u.node, u.name, u.model, tuple(placement.gpus),
                     tuple(u.devices[c][0] for c in placement.gpus), tuple(u.devices[c][1] for c in placement.gpus),
                     placement.gpu_milli, request, holder)

    def capacities(self, lease: Lease) -> list[int]:
        """Thousandths each of the lease's GPUs can hold in leases (work outside effopt taken out)."""
        i = self._index[lease.unit]
        return [MILLI - self.running_milli.get((i, c), 0) for c in lease.columns]

    # -- figures for the page -------------------------------------------------------------------------------
    def fragmentation(self, history: Sequence[tuple[int, int, tuple[str, ...]]]) -> dict[str, Any]:
        """Free GPU, and the share of it that the requests seen (FGD's target workload M) could not use."""
        if self.state is None:
            return {"free_milli": 0, "fragmented_milli": 0, "fragmented_pct": None, "types": 0}
        shapes = [GpuRequest(0, 0, n, m, models) for n, m, models in history if n >= 1]
        if not shapes:
            shapes = [GpuRequest(0, 0, 1, MILLI)]  # no history yet: the next task asks a whole GPU
        index = FragmentationIndex(self.state, TargetWorkload.from_requests(shapes))
        free = int(self.state.gpu_free_total.sum())
        pct = cluster_fragmentation_ratio(index)
        return {"free_milli": free, "fragmented_milli": round(index.cluster_fragmentation()),
                "fragmented_pct": None if pct is None else round(pct, 1), "types": len(index.workload)}


# -- backends ---------------------------------------------------------------------------------------------
@dataclass
class Snapshot:
    now: float
    leases: list[Lease]
    mine: Lease | None
    history: list[tuple[int, int, tuple[str, ...]]] = field(default_factory=list)


class LeaseBackend(ABC):
    """Where the leases live. Every method is atomic on its own."""

    kind = ""

    @abstractmethod
    def snapshot(self, holder: str | None = None) -> Snapshot:
        """The live leases (expired ones dropped), the holder's own, and the recent request types."""

    @abstractmethod
    def commit(self, lease: Lease, capacities: Sequence[int], ttl_s: float) -> tuple[str, Lease | None]:
        """Store ``lease`` if each of its GPUs still has room (``capacities``) and its holder holds none:
        ``("ok", lease)`` with its times set, ``("exists", the holder's lease)``, or ``("conflict", None)``."""

    @abstractmethod
    def renew(self, lease: Lease, ttl_s: float) -> Lease | None:
        """The lease with a new expiry, or None when it expired (its GPUs may be leased again)."""

    @abstractmethod
    def release(self, lease: Lease) -> bool:
        """End the lease (only its holder's); False when it was gone already."""

    def describe(self) -> str:
        return self.kind


def _shape(d: Mapping[str, Any]) -> tuple[int, int, tuple[str, ...]]:
    return int(d["n"]), int(d["m"]), tuple(d.get("models") or ())


# Lua: KEYS[1] leases hash (id -> JSON), KEYS[2] holders hash (holder -> id), KEYS[3] history list.
_LUA_PURGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #all, 2 do
  local l = cjson.decode(all[i + 1])
  if l.expires_at <= now then
    redis.call('HDEL', KEYS[1], all[i])
    if redis.call('HGET', KEYS[2], l.holder) == all[i] then redis.call('HDEL', KEYS[2], l.holder) end
  else
    live[#live + 1] = {all[i], l, all[i + 1]}
  end
end
"""
_LUA_SNAPSHOT = _LUA_PURGE + """
local out = {}
for _, e in ipairs(live) do out[#out + 1] = e[3] end
local mine = ''
if ARGV[1] ~= '' then
  local id = redis.call('HGET', KEYS[2], ARGV[1])
  if id then mine = redis.call('HGET', KEYS[1], id) or '' end
end
return {tostring(now), out, mine, redis.call('LRANGE', KEYS[3], 0, -1)}
"""
# ARGV: lease JSON, ttl seconds, capacities JSON (one per GPU of the lease), history length, history entry
_LUA_COMMIT = _LUA_PURGE + """
local new = cjson.decode(ARGV[1])
local held = redis.call('HGET', KEYS[2], new.holder)
if held then
  local doc = redis.call('HGET', KEYS[1], held)
  if doc then return {'exists', doc} end
end
local used = {}
for _, e in ipairs(live) do
  local l = e[2]
  if l.unit == new.unit then
    for _, c in ipairs(l.columns) do used[c] = (used[c] or 0) + l.gpu_milli end
  end
end
local caps = cjson.decode(ARGV[3])
for i, c in ipairs(new.columns) do
  if (used[c] or 0) + new.gpu_milli > caps[i] then return {'conflict', ''} end
end
new.acquired_at = now
new.renewed_at = now
new.expires_at = now + tonumber(ARGV[2])
local doc = cjson.encode(new)
redis.call('HSET', KEYS[1], new.lease_id, doc)
redis.call('HSET', KEYS[2], new.holder, new.lease_id)
redis.call('LPUSH', KEYS[3], ARGV[5])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[4]) - 1)
return {'ok', doc}
"""
# ARGV: lease id, holder, ttl seconds
_LUA_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local doc = redis.call('HGET', KEYS[1], ARGV[1])
if not doc then return '' end
local l = cjson.decode(doc)
if l.holder ~= ARGV[2] then return '' end
if l.expires_at <= now then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if redis.call('HGET', KEYS[2], l.holder) == ARGV[1] then redis.call('HDEL', KEYS[2], l.holder) end
  return ''
end
l.renewed_at = now
l.expires_at = now + tonumber(ARGV[3])
doc = cjson.encode(l)
redis.call('HSET', KEYS[1], ARGV[1], doc)
return doc
"""
# ARGV: lease id, holder
_LUA_RELEASE = """
local doc = redis.call('HGET', KEYS[1], ARGV[1])
if not doc then return 0 end
local l = cjson.decode(doc)
if l.holder ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[2], l.holder) == ARGV[1] then redis.call('HDEL', KEYS[2], l.holder) end
return 1
"""


class RedisLeaseBackend(LeaseBackend):
    """Leases in Redis under ``prefix``: one Lua script per snapshot, commit, renewal and release."""

    kind = "redis"

    def __init__(self, client: Any, prefix: str = "effopt:gpu", history_max: int = HISTORY_MAX) -> None:
        self.client = client
        self.prefix = prefix
        self.history_max = history_max
        self.keys = [f"{prefix}:leases", f"{prefix}:holders", f"{prefix}:history"]
        self._snapshot = client.register_script(_LUA_SNAPSHOT)
        self._commit = client.register_script(_LUA_COMMIT)
        self._renew = client.register_script(_LUA_RENEW)
        self._release = client.register_script(_LUA_RELEASE)

    @staticmethod
    def _text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    def snapshot(self, holder: str | None = None) -> Snapshot:
        now, live, mine, history = self._snapshot(keys=self.keys, args=[holder or ""])
        leases = [Lease.from_dict(json.loads(self._text(d))) for d in live]
        mine_text = self._text(mine)
        shapes = [_shape(json.loads(self._text(h))) for h in history]
        return Snapshot(float(self._text(now)), leases, Lease.from_dict(json.loads(mine_text)) if mine_text else None,
                        shapes)

    def commit(self, lease: Lease, capacities: Sequence[int], ttl_s: float) -> tuple[str, Lease | None]:
        entry = json.dumps({"n": lease.num_gpu, "m": lease.gpu_milli, "models": list(lease.request.models)})
        status, doc = self._commit(keys=self.keys, args=[json.dumps(lease.to_dict()), ttl_s,
                                                          json.dumps(list(capacities)), self.history_max, entry])
        status, doc = self._text(status), self._text(doc)
        return status, (Lease.from_dict(json.loads(doc)) if doc else None)

    def renew(self, lease: Lease, ttl_s: float) -> Lease | None:
        doc = self._text(self._renew(keys=self.keys[:2], args=[lease.lease_id, lease.holder, ttl_s]))
        return Lease.from_dict(json.loads(doc)) if doc else None

    def release(self, lease: Lease) -> bool:
        return bool(int(self._release(keys=self.keys[:2], args=[lease.lease_id, lease.holder])))

    def describe(self) -> str:
        try:
            kw = self.client.connection_pool.connection_kwargs
            return f"redis {kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)} ({self.prefix})"
        except AttributeError:
            return f"redis ({self.prefix})"


class StoreLeaseBackend(LeaseBackend):
    """Leases in the effopt store's ``effopt_gpu_lease`` table; each write one exclusive transaction."""

    kind = "store"

    def __init__(self, store: Any, clock: Any = None, history_max: int = HISTORY_MAX) -> None:
        self.store = store
        self.clock = clock  # None: the database's clock where it is shared (PostgreSQL), else time.time
        self.history_max = history_max

    @staticmethod
    def _table() -> Any:
        from effopt.store import gpu_leases

        return gpu_leases

    def _now(self, conn: Any) -> float:
        """The database's clock on PostgreSQL, where workers on several machines share the lease table and their
        own clocks may drift apart (a fast one would expire live leases); this process's clock on SQLite (one
        machine) or when a test gives one."""
        if self.clock is not None:
            return self.clock()
        if conn.dialect.name == "postgresql":
            import sqlalchemy as sa

            return float(conn.execute(sa.text("SELECT extract(epoch FROM clock_timestamp())")).scalar())
        return time.time()

    def _expire(self, conn: Any, now: float) -> None:
        import sqlalchemy as sa

        t = self._table()
        conn.execute(sa.update(t).where(t.c.state == "active", t.c.expires_at <= now)
                     .values(state="expired", ended_at=t.c.expires_at))

    def _live(self, conn: Any, now: float) -> list[Lease]:
        import sqlalchemy as sa

        t = self._table()
        rows = conn.execute(sa.select(t.c.document).where(t.c.state == "active", t.c.expires_at > now)).all()
        return [Lease.from_dict(r[0]) for r in rows]

    def snapshot(self, holder: str | None = None) -> Snapshot:
        import sqlalchemy as sa

        t = self._table()
        self.store.ensure_schema()
        with self.store.engine.connect() as conn:
            now = self._now(conn)
            leases = self._live(conn, now)
            rows = conn.execute(sa.select(t.c.document).order_by(t.c.acquired_at.desc()).limit(self.history_max)).all()
        history = [(len(r[0]["columns"]), int(r[0]["gpu_milli"]), tuple(r[0]["request"].get("models") or ()))
                   for r in rows]
        mine = next((lease for lease in leases if lease.holder == holder), None) if holder else None
        return Snapshot(now, leases, mine, history)

    def commit(self, lease: Lease, capacities: Sequence[int], ttl_s: float) -> tuple[str, Lease | None]:
        import sqlalchemy as sa

        from effopt.store import GPU_LEASES_KEPT

        t = self._table()
        with self.store.exclusive() as conn:
            now = self._now(conn)
            self._expire(conn, now)
            live = self._live(conn, now)
            held = next((x for x in live if x.holder == lease.holder), None)
            if held is not None:
                return "exists", held
            used: dict[int, int] = {}
            for x in live:
                if x.unit == lease.unit:
                    for c in x.columns:
                        used[c] = used.get(c, 0) + x.gpu_milli
            if any(used.get(c, 0) + lease.gpu_milli > cap for c, cap in zip(lease.columns, capacities, strict=True)):
                return "conflict", None
            done = replace(lease, acquired_at=now, renewed_at=now, expires_at=now + ttl_s)
            conn.execute(sa.insert(t).values(id=done.lease_id, holder=done.holder, state="active", node=done.node,
                                             unit=done.unit, columns=list(done.columns), gpu_milli=done.gpu_milli,
                                             document=done.to_dict(), acquired_at=now, expires_at=done.expires_at))
            keep = (sa.select(t.c.id).where(t.c.state != "active").order_by(t.c.acquired_at.desc())
                    .limit(GPU_LEASES_KEPT))
            conn.execute(sa.delete(t).where(t.c.state != "active", t.c.id.not_in(keep.scalar_subquery())))
            return "ok", done

    def renew(self, lease: Lease, ttl_s: float) -> Lease | None:
        import sqlalchemy as sa

        t = self._table()
        with self.store.exclusive() as conn:
            now = self._now(conn)
            self._expire(conn, now)
            row = conn.execute(sa.select(t.c.document).where(t.c.id == lease.lease_id, t.c.state == "active",
                                                             t.c.holder == lease.holder)).first()
            if row is None:
                return None
            done = replace(Lease.from_dict(row[0]), renewed_at=now, expires_at=now + ttl_s)
            conn.execute(sa.update(t).where(t.c.id == lease.lease_id).values(document=done.to_dict(),
                                                                              expires_at=done.expires_at))
            return done

    def release(self, lease: Lease) -> bool:
        import sqlalchemy as sa

        t = self._table()
        with self.store.exclusive() as conn:
            now = self._now(conn)
            res = conn.execute(sa.update(t).where(t.c.id == lease.lease_id, t.c.holder == lease.holder,
                                                  t.c.state == "active", t.c.expires_at > now)
                               .values(state="released", ended_at=now))
            return bool(res.rowcount)

    def describe(self) -> str:
        return f"effopt store {self.store._safe_url()}"


# -- the manager ------------------------------------------------------------------------------------------
class GpuLeaseManager:
    """Acquire, renew, release and list leases of ``inventory``'s GPUs in ``backend``, placed by ``policy``."""

    def __init__(self, backend: LeaseBackend, inventory: Inventory, policy: str = "effopt", ttl_s: float = 60.0,
                 seed: int = DEFAULT_SEED, max_attempts: int = MAX_ATTEMPTS) -> None:
        self.backend = backend
        self.inventory = inventory
        self.policy_name = policy
        self.ttl_s = float(ttl_s)
        self.seed = seed
        self.max_attempts = max_attempts
        self.last_warnings: list[str] = []
        get_policy(policy, TargetWorkload.from_requests([GpuRequest(0, 0, 1, MILLI)]))  # an unknown name fails now

    def cluster(self, snapshot: Snapshot, nodes: Sequence[str] = ()) -> LeaseCluster:
        cluster = LeaseCluster(self.inventory, nodes)
        cluster.apply_leases(snapshot.leases)
        cluster.apply_running({lease.lease_id for lease in snapshot.leases})
        self.last_warnings = cluster.warnings
        return cluster

    def check(self, request: LeaseRequest) -> GpuRequest:
        """The engine's request; raises :class:`LeaseRequestError` when it can never be placed here."""
        if self.inventory.empty:
            raise LeaseRequestError("no GPUs in the inventory")
        return LeaseCluster(self.inventory, request.nodes).gpu_request(request)

    def _policy(self, history: Sequence[tuple[int, int, tuple[str, ...]]], current: GpuRequest) -> Policy:
        shapes = [GpuRequest(0, 0, n, m, models) for n, m, models in history if n >= 1 and 0 < m <= MILLI]
        workload = TargetWorkload.from_requests(shapes or [current])
        policy = get_policy(self.policy_name, workload, seed=self.seed)
        if isinstance(policy, EffoptPolicy):
            for shape in reversed(shapes):  # oldest first, as they arrived
                policy.observe(shape)
        return policy

    def fits(self, request: LeaseRequest) -> Placement | NoFit:
        """Where the request would go now (nothing is leased)."""
        current = self.check(request)
        snap = self.backend.snapshot()
        cluster = self.cluster(snap, request.nodes)
        assert cluster.state is not None
        policy = self._policy(snap.history, current)
        if isinstance(policy, EffoptPolicy):
            policy.learn = False
        return policy.place(cluster.state, current)

    def acquire(self, request: LeaseRequest, holder: Holder, ttl_s: float | None = None) -> Lease | NoCapacity:
        """A lease for ``holder`` (its own again, renewed, when it holds one), or :class:`NoCapacity`.

        Raises :class:`LeaseRequestError` for a request this inventory can never hold."""
        ttl = self.ttl_s if ttl_s is None else float(ttl_s)
        current = self.check(request)
        policy: Policy | None = None
        for attempt in range(self.max_attempts):
            snap = self.backend.snapshot(holder.key)
            if snap.mine is not None:
                renewed = self.backend.renew(snap.mine, ttl)
                if renewed is not None:
                    return renewed
                continue  # it expired between the two calls: lease anew
            cluster = self.cluster(snap, request.nodes)
            assert cluster.state is not None
            if policy is None:
                policy = self._policy(snap.history, current)
            elif isinstance(policy, EffoptPolicy):
                policy.learn = False  # a retried request is not a new arrival
            placed = policy.place(cluster.state, current)
            if not placed:
                return NoCapacity(placed.reason, request)
            lease = cluster.lease_for(placed, request, holder)
            status, got = self.backend.commit(lease, cluster.capacities(lease), ttl)
            if status in ("ok", "exists") and got is not None:
                return got
            time.sleep(random.uniform(0.0, 0.002 * min(attempt + 1, 10)))  # ok: jitter between retries of a race
        return NoCapacity(f"the GPUs changed under {self.max_attempts} placements in a row (other tasks took them); "
                          "try again", request)

    def renew(self, lease: Lease, ttl_s: float | None = None) -> Lease | None:
        return self.backend.renew(lease, self.ttl_s if ttl_s is None else float(ttl_s))

    def release(self, lease: Lease) -> bool:
        return self.backend.release(lease)

    def list(self) -> list[Lease]:
        return sorted(self.backend.snapshot().leases, key=lambda x: (x.node, x.unit, x.columns, x.acquired_at))

    def usage(self) -> dict[str, Any]:
        """Per GPU of the inventory: thousandths leased and held by other work; the fragmentation figure."""
        snap = self.backend.snapshot()
        cluster = self.cluster(snap)
        leased: dict[tuple[str, int], int] = {}
        for lease in snap.leases:
            for c in lease.columns:
                leased[(lease.unit, c)] = leased.get((lease.unit, c), 0) + lease.gpu_milli
        gpus = []
        for i, u in enumerate(cluster.units):
            for c, (device, uuid) in enumerate(u.devices):
                gpus.append({"node": u.node, "unit": u.name, "model": u.model, "device": device, "uuid": uuid,
                             "leased_milli": leased.get((u.name, c), 0),
                             "other_milli": cluster.running_milli.get((i, c), 0)})
        return {"gpus": gpus, "leases": [lease.to_dict() for lease in snap.leases],
                "fragmentation": cluster.fragmentation(snap.history), "warnings": cluster.warnings}


__all__ = ["MAX_ATTEMPTS", "UNITS", "GpuLeaseManager", "Holder", "Lease", "LeaseBackend", "LeaseCluster",
           "LeaseRequest", "LeaseRequestError", "NoCapacity", "RedisLeaseBackend", "Snapshot", "StoreLeaseBackend"]
