"""Airflow pools that equal the GPU inventory: what to create, resize or delete (the plan; the Airflow layer
applies it over the REST API).

Pools, in slots of ``unit`` (``gpu``: one per leasable GPU or MIG slice; ``milli``: 1000 per GPU):

* ``effopt_gpu``: every GPU; ``effopt_gpu_<model>``: the GPUs of one model (MIG slices as ``mig-<profile>``);
* ``effopt_quota_<tenant>`` / ``effopt_quota_<tenant>_<model>``: a tenant's quota (``[effopt] gpu_quotas``;
  ``*`` is any model), capped by the GPUs of that model that exist;
* ``effopt_serial``: the one-slot pool of graph nodes marked ``parallel: false`` (created when missing, never
  resized: its size is its meaning).

Rules: a pool already right is left alone (a second run changes nothing). A pool effopt keeps (its
description ends with :data:`MARK`) that is no longer wanted is deleted, unless tasks still run, wait or are
queued in it: then it is emptied (0 slots) and kept. Shrinking a pool below its occupied slots is done and
reported: running tasks go on, new ones wait. An empty inventory changes no GPU pool (an inventory that found
nothing is no reason to stop every GPU task): the plan says so; only a missing ``effopt_gpu`` is created, with
one GPU's worth of slots, since GPU tasks are in it and Airflow never schedules a task in a pool it lacks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from effopt.gpu.inventory.base import Inventory
from effopt.gpu.model import MILLI

ALL_POOL = "effopt_gpu"
SERIAL_POOL = "effopt_serial"
MODEL_PREFIX = "effopt_gpu_"
QUOTA_PREFIX = "effopt_quota_"
MARK = "(kept by effopt_gpu_pools)"
SERIAL_DESCRIPTION = "effopt graph nodes marked parallel: false (one at a time)"
ANY_MODEL = "*"
#: Actions that change Airflow's pools.
CHANGES = frozenset({"create", "update", "shrink-occupied", "delete", "empty-occupied"})


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "unnamed"


def model_pool(model: str) -> str:
    """``effopt_gpu_<model>`` (characters other than letters, digits, ``_ . -`` become ``_``)."""
    return MODEL_PREFIX + _safe(model)


def quota_pool(tenant: str, model: str = ANY_MODEL) -> str:
    return QUOTA_PREFIX + _safe(tenant) + ("" if model == ANY_MODEL else "_" + _safe(model))


def slots(milli: int, unit: str) -> int:
    """Slots for ``milli`` thousandths of GPU: ``milli`` as is, or whole GPUs (a part of a GPU rounds up)."""
    return int(milli) if unit == "milli" else math.ceil(milli / MILLI)


def managed(name: str, description: str | None) -> bool:
    """A pool this sync created (and may delete)."""
    return name.startswith((MODEL_PREFIX, QUOTA_PREFIX)) and (description or "").endswith(MARK)


@dataclass(frozen=True)
class Quota:
    """``tenant`` may use ``milli`` thousandths of ``model`` GPUs (``*``: any)."""

    tenant: str
    model: str
    milli: int


@dataclass(frozen=True)
class PoolChange:
    pool: str
    action: str  # create | update | shrink-occupied | delete | empty-occupied | keep | left-as-is
    slots_before: int | None
    slots_after: int | None
    occupied: int
    reason: str
    description: str = ""

    @property
    def changes(self) -> bool:
        return self.action in CHANGES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _describe(what: str, gpus_milli: int, unit: str) -> str:
    amount = f"{gpus_milli / MILLI:g} GPU{'s' if gpus_milli != MILLI else ''}"
    return f"effopt: {what}, {amount} in {'thousandths' if unit == 'milli' else 'whole GPUs'} {MARK}"


def wanted_pools(inventory: Inventory, unit: str, quotas: Iterable[Quota]) -> dict[str, tuple[int, str, str]]:
    """``{pool: (slots, description, why)}`` for a non-empty inventory."""
    models = inventory.models()
    total = sum(models.values()) * MILLI
    out: dict[str, tuple[int, str, str]] = {
        ALL_POOL: (slots(total, unit), _describe(f"all GPUs ({inventory.describe()})", total, unit),
                   f"{inventory.describe()}")}
    for model, count in models.items():
        milli = count * MILLI
        out[model_pool(model)] = (slots(milli, unit), _describe(f"GPUs of model {model}", milli, unit),
                                  f"{count} x {model}")
    for q in quotas:
        exists = total if q.model == ANY_MODEL else models.get(q.model, 0) * MILLI
        cap = min(q.milli, exists)
        n = slots(cap, unit) if unit == "milli" else (max(1, cap // MILLI) if cap else 0)
        what = "any model" if q.model == ANY_MODEL else q.model
        why = f"quota {q.tenant}:{q.model}={q.milli / MILLI:g} GPUs"
        if cap < q.milli:
            why += (f", capped at the {exists / MILLI:g} GPUs of {what} that exist" if exists else
                    f", but no GPU of {what} exists")
        out[quota_pool(q.tenant, q.model)] = (n, _describe(f"quota of {q.tenant} on {what}", cap, unit), why)
    return out


def _occupied(pool: Mapping[str, Any]) -> int:
    return int(pool.get("occupied_slots") or 0)


def _busy(pool: Mapping[str, Any]) -> int:
    """Task slots running, queued, scheduled or deferred in the pool."""
    return sum(int(pool.get(k) or 0) for k in ("running_slots", "queued_slots", "scheduled_slots", "deferred_slots"))


def plan_pools(inventory: Inventory, unit: str, quotas: Iterable[Quota],
               existing: Mapping[str, Mapping[str, Any]]) -> list[PoolChange]:
    """What to do with each pool; ``existing`` is Airflow's ``GET /api/v2/pools`` by name."""
    if unit not in ("gpu", "milli"):
        raise ValueError(f"pool unit must be gpu or milli, got {unit!r}")
    quotas = list(quotas)
    out: list[PoolChange] = []
    if SERIAL_POOL in existing:
        have = existing[SERIAL_POOL]
        out.append(PoolChange(SERIAL_POOL, "keep", have.get("slots"), have.get("slots"), _occupied(have),
                              "exists (its size is left to you)"))
    else:
        out.append(PoolChange(SERIAL_POOL, "create", None, 1, 0, "graph DAGs' nodes marked parallel: false use it",
                              SERIAL_DESCRIPTION))
    if inventory.empty:
        why = f"no GPUs in the inventory ({inventory.source}: {inventory.detail}); GPU pools are left as they are"
        for name in sorted(existing):
            pool = existing[name]
            if name == ALL_POOL or name.startswith((MODEL_PREFIX, QUOTA_PREFIX)):
                out.append(PoolChange(name, "left-as-is", pool.get("slots"), pool.get("slots"), _occupied(pool), why))
        if ALL_POOL not in existing:
            # GPU tasks are in effopt_gpu; a pool Airflow does not know never schedules them.  Without GPUs they
            # run without a lease: one GPU's worth of slots lets them run, one at a time.
            one = MILLI if unit == "milli" else 1
            out.append(PoolChange(ALL_POOL, "create", None, one, 0,
                                  f"no GPUs in the inventory ({inventory.source}: {inventory.detail}); one GPU's "
                                  "worth of slots so GPU tasks run (without a lease, one at a time) instead of "
                                  "never being scheduled",
                                  f"effopt: no GPUs in the inventory yet, one GPU's worth of slots {MARK}"))
        return out
    wanted = wanted_pools(inventory, unit, quotas)
    for name, (n, description, why) in sorted(wanted.items()):
        pool = existing.get(name)
        if pool is None:
            out.append(PoolChange(name, "create", None, n, 0, why, description))
            continue
        before, occupied = int(pool.get("slots") or 0), _occupied(pool)
        if before == n and (pool.get("description") or "") == description:
            out.append(PoolChange(name, "keep", before, n, occupied, why, description))
        elif n < before and n < occupied:
            out.append(PoolChange(name, "shrink-occupied", before, n, occupied,
                                  f"{why}; {occupied} slot(s) are in use, more than the {n} that remain: running tasks "
                                  "go on, new ones wait until the pool has room", description))
        else:
            out.append(PoolChange(name, "update", before, n, occupied, why, description))
    for name in sorted(set(existing) - set(wanted)):
        pool = existing[name]
        if not managed(name, pool.get("description")):
            continue
        busy = _busy(pool)
        if busy:
            if int(pool.get("slots") or 0) == 0:
                out.append(PoolChange(name, "keep", 0, 0, _occupied(pool),
                                      f"no longer wanted but {busy} task slot(s) still use it: deleted once they end",
                                      pool.get("description") or ""))
            else:
                out.append(PoolChange(name, "empty-occupied", pool.get("slots"), 0, _occupied(pool),
                                      f"no longer wanted (its GPUs or quota are gone), but {busy} task slot(s) still "
                                      "use it: emptied now, deleted once they end", pool.get("description") or ""))
        else:
            out.append(PoolChange(name, "delete", pool.get("slots"), None, 0,
                                  "no longer wanted: its GPUs or its quota are gone"))
    return out


def pool_for(*, gpu_pool: str, tenant: str | None, models: Iterable[str] = (),
             quotas: Iterable[Quota] = ()) -> str:
    """The pool a GPU task goes to: its tenant's quota pool (for its one model when the tenant has a quota on it,
    else the tenant's any-model quota), else ``gpu_pool``. A tenant without a quota is an error naming it."""
    if not tenant:
        return gpu_pool
    models = [m for m in models if m]
    mine = [q for q in quotas if q.tenant == tenant]
    if len(models) == 1:
        for q in mine:
            if q.model == models[0]:
                return quota_pool(tenant, q.model)
    for q in mine:
        if q.model == ANY_MODEL:
            return quota_pool(tenant)
    known = ", ".join(str(f"{q.tenant}:{q.model}") for q in quotas) or "none"
    raise ValueError(f"tenant {tenant!r} has no GPU quota for {'|'.join(models) or 'any model'} in [effopt] gpu_quotas "
                     f"(quotas: {known})")


__all__ = ["ALL_POOL", "MARK", "MODEL_PREFIX", "QUOTA_PREFIX", "SERIAL_POOL", "PoolChange", "Quota", "managed",
           "model_pool", "plan_pools", "pool_for", "quota_pool", "slots", "wanted_pools"]
