"""The input of every apply mode: one container's current and recommended resources.

Units: CPU in cores, memory in bytes, GPUs as a whole count (Kubernetes
``nvidia.com/gpu``, set in limits).  ``None`` means "not set" in
:attr:`ResourceChange.current` and "leave as it is" in
:attr:`ResourceChange.recommended`.  :class:`~effopt.workloads.WorkloadRef` and
:class:`~effopt.workloads.Resources` live in :mod:`effopt.workloads`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from effopt.workloads import (
    AIRFLOW_TASK_KIND,
    GPU_RESOURCE,
    RESOURCE_FIELDS,
    SUPPORTED_KINDS,
    ChangeError,
    Resources,
    WorkloadRef,
    format_cpu,
    format_memory,
    parse_quantity,
    round_cpu,
    round_memory,
)

__all__ = ["AIRFLOW_TASK_KIND", "GPU_RESOURCE", "RESOURCE_FIELDS", "SUPPORTED_KINDS", "ChangeError", "ResourceChange",
           "Resources", "WorkloadRef", "format_cpu", "format_memory", "parse_quantity", "round_cpu", "round_memory"]


@dataclass(frozen=True)
class ResourceChange:
    """A recommendation for one container of one workload.

    ``memory_peak_bytes`` is the highest memory usage observed in the
    recommender's window: no guardrail lets memory go below it.
    ``replicas`` multiplies the cost delta (pods running this container).
    """

    workload: WorkloadRef
    container: str
    current: Resources
    recommended: Resources
    reason: str
    memory_peak_bytes: int | None = None
    replicas: int = 1

    @property
    def label(self) -> str:
        return f"{self.workload} container {self.container}"

    def validate(self) -> None:
        if not self.container:
            raise ChangeError(f"{self.workload}: container name is empty")
        if not self.reason:
            raise ChangeError(f"{self.label}: a change needs a reason")
        self.current.validate(f"{self.label} current")
        self.recommended.validate(f"{self.label} recommended")
        self.current.merged(self.recommended).validate(f"{self.label} current with recommended applied")
        peak = self.memory_peak_bytes
        if peak is not None and (isinstance(peak, bool) or not isinstance(peak, (int, float))
                                 or not math.isfinite(peak) or peak < 0):
            raise ChangeError(f"{self.label}: memory_peak_bytes = {peak!r} must be a finite number >= 0")
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas < 0:
            raise ChangeError(f"{self.label}: replicas = {self.replicas!r} must be an integer >= 0")
