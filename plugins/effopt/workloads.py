"""Workloads and their resources, as every capability names them (neutral ground: plain Python).

A :class:`WorkloadRef` is a Kubernetes workload (kind, namespace, name) or an
Airflow task (kind ``AirflowTask``, namespace = DAG id, name = task id);
:class:`Resources` is one container's requests and limits.  Units: CPU in
cores, memory in bytes, GPUs as a whole count (Kubernetes ``nvidia.com/gpu``,
set in limits).  ``None`` means "not set" (or, in a recommendation, "leave as
it is").  Metrics sources read them, right-sizing changes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from typing import Any

from effopt.units import MIB

GPU_RESOURCE = "nvidia.com/gpu"
SUPPORTED_KINDS = ("Deployment", "StatefulSet")
AIRFLOW_TASK_KIND = "AirflowTask"  # WorkloadRef(kind, namespace=dag_id, name=task_id)

# (field, Kubernetes section, Kubernetes resource name)
RESOURCE_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("cpu_request", "requests", "cpu"),
    ("cpu_limit", "limits", "cpu"),
    ("memory_request", "requests", "memory"),
    ("memory_limit", "limits", "memory"),
)


class ChangeError(ValueError):
    """A change, plan or manifest is invalid; the message names the workload and container."""


@dataclass(frozen=True, order=True)
class WorkloadRef:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def format_cpu(cores: float) -> str:
    """Kubernetes CPU quantity, rounded UP to a whole millicore: 0.25 -> ``250m``, 2 -> ``2``."""
    milli = math.ceil(round(cores * 1000, 6))
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def format_memory(n_bytes: float) -> str:
    """Kubernetes memory quantity, rounded UP to a whole MiB: ``512Mi``, ``2Gi``."""
    mib = math.ceil(round(n_bytes / MIB, 6))
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def round_cpu(cores: float) -> float:
    return math.ceil(round(cores * 1000, 6)) / 1000


def round_memory(n_bytes: float) -> int:
    return math.ceil(round(n_bytes / MIB, 6)) * MIB


def parse_quantity(value: Any, what: str) -> float:
    """A Kubernetes quantity (``"250m"``, ``"1Gi"``, ``2``) as a number; ChangeError naming ``what``."""
    from kubernetes.utils import parse_quantity as _parse

    try:
        return float(_parse(value))
    except (ValueError, TypeError) as exc:
        raise ChangeError(f"{what}: {value!r} is not a Kubernetes quantity ({exc})") from None


@dataclass(frozen=True)
class Resources:
    """One container's resources."""

    cpu_request: float | None = None  # cores
    cpu_limit: float | None = None
    memory_request: int | None = None  # bytes
    memory_limit: int | None = None
    gpu: int | None = None  # count (limits nvidia.com/gpu)
    gpu_model: str | None = None  # e.g. "A10G", for pricing

    def validate(self, what: str) -> None:
        for f in ("cpu_request", "cpu_limit", "memory_request", "memory_limit", "gpu"):
            v = getattr(self, f)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, Decimal)) or not math.isfinite(v) or v < 0:
                raise ChangeError(f"{what}: {f} = {v!r} must be a finite number >= 0")
            if f == "gpu" and int(v) != v:
                raise ChangeError(f"{what}: gpu = {v!r} must be a whole number of GPUs")
            if f in ("cpu_request", "memory_request") and v == 0:
                raise ChangeError(f"{what}: {f} = 0 is not a usable request")
        for req, lim in (("cpu_request", "cpu_limit"), ("memory_request", "memory_limit")):
            r, lv = getattr(self, req), getattr(self, lim)
            if r is not None and lv is not None and r > lv:
                raise ChangeError(f"{what}: {req} {r:g} is above {lim} {lv:g}")

    def merged(self, other: Resources) -> Resources:
        """These resources with every field ``other`` sets replaced."""
        return replace(self, **{f.name: getattr(other, f.name) for f in fields(other)
                                if getattr(other, f.name) is not None})

    def billed_cpu(self) -> float:
        """Cores the scheduler reserves: the request, else the limit (Kubernetes defaults one to the other)."""
        return float(self.cpu_request if self.cpu_request is not None else (self.cpu_limit or 0.0))

    def billed_memory(self) -> float:
        return float(self.memory_request if self.memory_request is not None else (self.memory_limit or 0))

    def to_k8s(self) -> dict[str, dict[str, str]]:
        """A ``V1ResourceRequirements``-compatible dict with the fields that are set."""
        out: dict[str, dict[str, str]] = {}
        for f, section, name in RESOURCE_FIELDS:
            v = getattr(self, f)
            if v is not None:
                out.setdefault(section, {})[name] = format_cpu(v) if name == "cpu" else format_memory(v)
        if self.gpu:
            out.setdefault("limits", {})[GPU_RESOURCE] = str(int(self.gpu))
        return out

    @classmethod
    def from_k8s(cls, resources: dict[str, Any] | None, what: str, gpu_model: str | None = None) -> Resources:
        resources = resources or {}
        values: dict[str, Any] = {}
        for f, section, name in RESOURCE_FIELDS:
            raw = (resources.get(section) or {}).get(name)
            if raw is not None:
                q = parse_quantity(raw, f"{what} {section}.{name}")
                values[f] = q if name == "cpu" else int(q)
        gpu = (resources.get("limits") or {}).get(GPU_RESOURCE)
        if gpu is not None:
            values["gpu"] = int(parse_quantity(gpu, f"{what} limits.{GPU_RESOURCE}"))
        return cls(gpu_model=gpu_model, **values)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
