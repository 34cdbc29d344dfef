"""The memory re-plan after an OOM kill: VPA's bump-up rule, as plain functions.

VPA answers an OOM kill by adding a memory sample of
``max(used + 100 MiB, used x 1.2)``, ``used`` being the larger of the
container's request and the peak usage seen before the kill
(kubernetes/autoscaler, vertical-pod-autoscaler/pkg/recommender/model).
:func:`oom_bump` is that rule; :func:`plan_after_oom` applies it to one
container's memory limit, for a caller that reacts to an OOM kill at once
instead of waiting for the next scheduled recommendation (the effopt and VPA
recommenders use the same rule when their history holds an OOM kill).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from effopt.units import MIB

#: VPA's OOM bump-up: at least this many bytes more ...
OOM_MIN_BUMP_BYTES = 100 * MIB
#: ... and at least this ratio of the memory used.
OOM_BUMP_RATIO = 0.2


def oom_bump(used: float, min_bump: float = OOM_MIN_BUMP_BYTES, ratio: float = OOM_BUMP_RATIO) -> float:
    """``max(used + min_bump, used * (1 + ratio))``: the memory VPA provisions after an OOM kill at ``used``."""
    if not (math.isfinite(used) and used >= 0):
        raise ValueError(f"memory used must be a non-negative number, got {used!r}")
    if min_bump < 0 or ratio < 0:
        raise ValueError(f"the bump must be non-negative (got min_bump {min_bump!r}, ratio {ratio!r})")
    return max(used + min_bump, used * (1.0 + ratio))


@dataclass(frozen=True)
class OomReplan:
    """The memory limit (and request) to set after an OOM kill, and why."""

    used_bytes: float
    limit_bytes: float
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"used_bytes": self.used_bytes, "limit_bytes": self.limit_bytes, "reason": self.reason}


def plan_after_oom(peak_bytes: float | None, *, request_bytes: float | None = None, limit_bytes: float | None = None,
                   recommended_bytes: float | None = None, min_bump: float = OOM_MIN_BUMP_BYTES,
                   ratio: float = OOM_BUMP_RATIO) -> OomReplan:
    """The memory re-plan after a container was OOM-killed.

    ``used`` is the largest of the peak usage seen before the kill, the request and the limit it was killed at
    (a kill happens at the limit, so the limit is a lower bound of what it needed); the new limit is
    :func:`oom_bump` of it, or ``recommended_bytes`` (e.g. the last recommendation) when that is higher.
    Raises ValueError when nothing is known of what the container used.
    """
    known = [v for v in (peak_bytes, request_bytes, limit_bytes) if v is not None]
    if not known:
        raise ValueError("an OOM re-plan needs the peak usage, the request or the limit of the killed container")
    used = max(known)
    bumped = oom_bump(used, min_bump, ratio)
    target = max(bumped, recommended_bytes or 0.0)
    source = ("limit" if limit_bytes is not None and used == limit_bytes
              else "peak usage" if peak_bytes is not None and used == peak_bytes else "request")
    reason = (f"OOM kill: {source} {used / MIB:.0f} MiB -> max(+{min_bump / MIB:.0f} MiB, x{1 + ratio:g}) = "
              f"{bumped / MIB:.0f} MiB" + (f"; kept the higher recommendation {target / MIB:.0f} MiB"
                                            if target > bumped else ""))
    return OomReplan(float(used), float(target), reason)
