"""Guardrails: what a recommendation may change in one apply, each decision explained.

Applied per resource field in this order:

1. unchanged within ``min_change_fraction`` (hysteresis): keep the current value;
2. an HPA scales the workload on this resource (cpu or memory): keep the
   current value, since changing the request moves the HPA's utilisation target;
3. bounds: clamp into [min, max];
4. step: at most ``max_step_down`` lower (0.5 = -50%) and ``max_step_up_factor``
   times higher than the current value;
5. memory floor: memory request and limit never below the observed peak
   (this wins over the step limit; above the max bound it blocks the change).

A per-workload cooldown blocks the whole workload while its last apply
(from the audit records) is younger than ``cooldown_s``.  The outcome keeps
a sentence per decision, which the plan shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from effopt.rightsizing.apply.model import (
    RESOURCE_FIELDS,
    ChangeError,
    ResourceChange,
    Resources,
    format_cpu,
    format_memory,
    round_cpu,
    round_memory,
)

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class GuardrailSettings:
    min_cpu_cores: float = 0.01
    max_cpu_cores: float = 64.0
    min_memory_bytes: int = 100 * MIB
    max_memory_bytes: int = 256 * GIB
    max_step_down: float = 0.5  # at most -50% per apply
    max_step_up_factor: float = 4.0  # at most x4 per apply
    min_change_fraction: float = 0.05  # smaller relative changes are not applied
    cooldown_s: float = 24 * 3600.0
    memory_peak_floor: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.min_cpu_cores <= self.max_cpu_cores:
            problems.append(f"need 0 < min_cpu_cores ({self.min_cpu_cores}) <= max_cpu_cores ({self.max_cpu_cores})")
        if not 0 < self.min_memory_bytes <= self.max_memory_bytes:
            problems.append(f"need 0 < min_memory_bytes ({self.min_memory_bytes}) <= max_memory_bytes "
                            f"({self.max_memory_bytes})")
        if not 0 < self.max_step_down < 1:
            problems.append(f"max_step_down {self.max_step_down} must be in (0, 1)")
        if not self.max_step_up_factor > 1:
            problems.append(f"max_step_up_factor {self.max_step_up_factor} must be > 1")
        if not 0 <= self.min_change_fraction < 1:
            problems.append(f"min_change_fraction {self.min_change_fraction} must be in [0, 1)")
        if not self.cooldown_s >= 0:
            problems.append(f"cooldown_s {self.cooldown_s} must be >= 0")
        if problems:
            raise ChangeError("invalid guardrail settings: " + "; ".join(problems))


@dataclass(frozen=True)
class GuardrailOutcome:
    """``planned`` holds only the fields that will change (None = unchanged)."""

    planned: Resources
    decisions: tuple[str, ...]
    blocked: str | None = None  # the reason nothing is applied for this container


def _fmt(resource: str, value: float) -> str:
    return format_cpu(value) if resource == "cpu" else format_memory(value)


def evaluate(change: ResourceChange, settings: GuardrailSettings, *, now: float,
             last_applied_at: float | None = None, hpa_resources: frozenset[str] = frozenset()) -> GuardrailOutcome:
    """Apply the guardrails to one (validated) change."""
    decisions: list[str] = []
    if last_applied_at is not None and now - last_applied_at < settings.cooldown_s:
        left = settings.cooldown_s - (now - last_applied_at)
        msg = (f"cooldown: {change.workload} was changed {(now - last_applied_at) / 3600:.1f} h ago, "
               f"the cooldown is {settings.cooldown_s / 3600:.1f} h ({left / 3600:.1f} h left)")
        return GuardrailOutcome(Resources(), (msg,), blocked=msg)
    planned: dict[str, float] = {}
    for field, section, resource in RESOURCE_FIELDS:
        target = getattr(change.recommended, field)
        if target is None:
            continue
        current = getattr(change.current, field)
        name = f"{resource} {section[:-1]}"  # "cpu request"
        if resource in hpa_resources:
            decisions.append(f"{name}: kept, a HorizontalPodAutoscaler scales {change.workload} on {resource}")
            continue
        lo, hi = ((settings.min_cpu_cores, settings.max_cpu_cores) if resource == "cpu"
                  else (settings.min_memory_bytes, settings.max_memory_bytes))
        value = float(target)
        if value < lo:
            decisions.append(f"{name}: raised to the minimum {_fmt(resource, lo)} (recommended {_fmt(resource, value)})")
            value = lo
        elif value > hi:
            decisions.append(f"{name}: lowered to the maximum {_fmt(resource, hi)} (recommended {_fmt(resource, value)})")
            value = hi
        if current:
            floor = current * (1 - settings.max_step_down)
            ceiling = current * settings.max_step_up_factor
            if value < floor:
                decisions.append(f"{name}: step limited to -{settings.max_step_down:.0%} of {_fmt(resource, current)} "
                                 f"-> {_fmt(resource, floor)} (recommended {_fmt(resource, value)})")
                value = floor
            elif value > ceiling:
                decisions.append(f"{name}: step limited to x{settings.max_step_up_factor:g} of "
                                 f"{_fmt(resource, current)} -> {_fmt(resource, ceiling)} "
                                 f"(recommended {_fmt(resource, value)})")
                value = ceiling
        peak = change.memory_peak_bytes
        if resource == "memory" and settings.memory_peak_floor and peak is not None and value < peak:
            if peak > hi:
                msg = (f"{name}: the observed peak {_fmt(resource, peak)} is above the maximum "
                       f"{_fmt(resource, hi)}; not changed")
                return GuardrailOutcome(Resources(), (*decisions, msg), blocked=msg)
            decisions.append(f"{name}: raised to the observed peak {_fmt(resource, peak)} "
                             f"(would have been {_fmt(resource, value)})")
            value = peak
        value = round_cpu(value) if resource == "cpu" else round_memory(value)
        if current and abs(value - current) / current < settings.min_change_fraction:
            decisions.append(f"{name}: kept at {_fmt(resource, current)}, the change to {_fmt(resource, value)} is "
                             f"below {settings.min_change_fraction:.0%}")
            continue
        if current is not None and math.isclose(value, current):
            continue
        planned[field] = value
    if change.recommended.gpu is not None and change.recommended.gpu != change.current.gpu:
        decisions.append(f"gpu: {change.current.gpu or 0} -> {change.recommended.gpu} is reported only; GPU counts "
                         "are changed by rescheduling, not by a resource patch")
    # A limit the plan sets never goes below the request it leaves (e.g. when the
    # request was held back by the step limit): raise it, the safe direction.
    for req, lim in (("cpu_request", "cpu_limit"), ("memory_request", "memory_limit")):
        request = planned.get(req, getattr(change.current, req))
        if lim in planned and request is not None and planned[lim] < request:
            resource = req.split("_")[0]
            decisions.append(f"{lim.replace('_', ' ')}: raised to the request {_fmt(resource, request)} "
                             f"(would have been {_fmt(resource, planned[lim])}; a limit below its request is invalid)")
            planned[lim] = request
    planned_res = Resources(**{k: (int(v) if k.startswith("memory") else v) for k, v in planned.items()})
    after = change.current.merged(planned_res)
    for req, lim in (("cpu_request", "cpu_limit"), ("memory_request", "memory_limit")):
        r, lv = getattr(after, req), getattr(after, lim)
        if r is not None and lv is not None and r > lv:
            msg = (f"{req.replace('_', ' ')} {r:g} would be above {lim.replace('_', ' ')} {lv:g} after the "
                   "guardrails; not changed")
            return GuardrailOutcome(Resources(), (*decisions, msg), blocked=msg)
    return GuardrailOutcome(replace(planned_res, gpu_model=None), tuple(decisions))
