"""Pods on spot nodes: the scheduling constraints that put them there, and how a lost pod is told apart.

On EKS, a pod reaches spot capacity through its node selector and
tolerations: ``karpenter.sh/capacity-type: spot`` (Karpenter) or
``eks.amazonaws.com/capacityType: SPOT`` (managed node groups), tolerating the
taint that keeps other pods off spot nodes (the same key, ``NoSchedule``).
Its ``terminationGracePeriodSeconds`` must end inside the two-minute
interruption notice, so the kubelet's SIGTERM leaves time to checkpoint and
the pod exits before the node goes.

A pod lost to a disruption (:func:`disruption`) carries the
``DisruptionTarget`` condition (preemption, taint-manager eviction, pod GC of
a lost node, kubelet shutdown), or its status says the node was lost, or the
pod is gone while it ran.  An ordinary failure (a non-zero exit) is none of
these.  Plain Python over the pod as the API serves it (camelCase JSON).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from effopt.spot.errors import SpotError

SPOT = "spot"
ON_DEMAND = "on-demand"
NOTICE_S = 120  # an interruption notice comes two minutes ahead
#: label scheme -> (node label key, its spot value, its on-demand value)
CAPACITY_LABELS: dict[str, tuple[str, str, str]] = {
    "karpenter": ("karpenter.sh/capacity-type", "spot", "on-demand"),
    "eks": ("eks.amazonaws.com/capacityType", "SPOT", "ON_DEMAND"),
}
#: ``status.reason`` values of a pod whose node went away.
NODE_LOST_REASONS = frozenset({"NodeLost", "NodeShutdown", "Shutdown", "Terminated", "UnexpectedAdmissionError"})


def placement(capacity: str, *, label: str = "karpenter", grace_period_s: int = 90) -> dict[str, Any]:
    """``node_selector``, ``tolerations`` and ``termination_grace_period`` for a pod on ``capacity``.

    Spot gets the spot selector, the toleration and the grace period; on-demand gets the on-demand selector
    only (and no grace period change).
    """
    if label not in CAPACITY_LABELS:
        raise SpotError(f"capacity label scheme {label!r}: use {' or '.join(CAPACITY_LABELS)}")
    if capacity not in (SPOT, ON_DEMAND):
        raise SpotError(f"capacity {capacity!r}: use spot or on-demand")
    if not isinstance(grace_period_s, int) or isinstance(grace_period_s, bool) or not 0 < grace_period_s < NOTICE_S:
        raise SpotError(f"termination grace period {grace_period_s!r} s must be a whole number in 1..{NOTICE_S - 1}: "
                        f"it must end inside the {NOTICE_S} s interruption notice")
    key, spot_value, od_value = CAPACITY_LABELS[label]
    if capacity == ON_DEMAND:
        return {"node_selector": {key: od_value}, "tolerations": [], "termination_grace_period": None}
    return {"node_selector": {key: spot_value},
            "tolerations": [{"key": key, "operator": "Equal", "value": spot_value, "effect": "NoSchedule"}],
            "termination_grace_period": grace_period_s}


def capacity_keys() -> set[str]:
    """Every node label key a capacity type is selected by (to replace them, not add a second)."""
    return {key for key, _, _ in CAPACITY_LABELS.values()}


def disruption(pod: Mapping[str, Any] | None, *, gone: bool = False) -> str | None:
    """Why ``pod`` was lost to a disruption, or None when it was not (an ordinary failure, or it succeeded)."""
    if gone:
        return "the pod is gone while it ran (its node was lost or the pod was deleted)"
    if not isinstance(pod, Mapping):
        return None
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and str(cond.get("status")) == "True":
            reason = cond.get("reason") or "unknown reason"
            message = cond.get("message") or ""
            return f"DisruptionTarget ({reason})" + (f": {message}" if message else "")
    if status.get("phase") == "Succeeded":
        return None
    if status.get("reason") in NODE_LOST_REASONS:
        return f"node lost ({status['reason']}): {status.get('message') or ''}".rstrip(": ")
    return None
