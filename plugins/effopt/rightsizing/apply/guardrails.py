"""Guardrails: what a recommendation may change in one apply, each decision explained.

The guardrails are small rules, applied in the one order of :data:`GUARDRAILS`;
a plan item's decisions (its ``guardrails`` list) come in that order, field by
field.  For the whole workload, first:

1. ``cooldown``: the workload's last apply (from the audit records) is younger
   than ``cooldown_s``: nothing is changed in it.

Then for each resource field the recommendation sets (cpu request, cpu limit,
memory request, memory limit), starting from the recommended value:

2. ``hpa_scaled``: an HPA scales the workload on this resource (cpu or memory):
   keep the current value, since changing the request moves the HPA's
   utilisation target;
3. ``bounds``: clamp into [min, max];
4. ``max_step``: at most ``max_step_down`` lower (0.5 = -50%) and
   ``max_step_up_factor`` times higher than the current value;
5. ``memory_peak_floor``: memory request and limit never below the observed
   peak (this wins over the step limit; a peak above the max bound blocks the
   container);
6. ``round_to_quantity``: rounded up to a whole millicore or MiB;
7. ``min_change``: a change smaller than ``min_change_fraction`` of the current
   value (hysteresis): keep the current value;
8. ``unchanged``: a value equal to the current one is not planned.

Then for the container, once every field is through:

9. ``gpu_reported_only``: a change of the GPU count is reported, not patched;
10. ``limit_not_below_request``: a limit the plan sets is raised to the request
    it leaves (e.g. a request held back by the step limit);
11. ``request_not_above_limit``: a request still above its limit blocks the
    container.

A blocking rule ends the evaluation: nothing is applied for the container, and
its sentence is the last decision.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
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
from effopt.units import GIB, HOUR, MIB


@dataclass(frozen=True)
class GuardrailSettings:
    min_cpu_cores: float = 0.01
    max_cpu_cores: float = 64.0
    min_memory_bytes: int = 100 * MIB
    max_memory_bytes: int = 256 * GIB
    max_step_down: float = 0.5  # at most -50% per apply
    max_step_up_factor: float = 4.0  # at most x4 per apply
    min_change_fraction: float = 0.05  # smaller relative changes are not applied
    cooldown_s: float = 24 * HOUR
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

    def bounds(self, resource: str) -> tuple[float, float]:
        """(min, max) of ``resource`` (cpu in cores, memory in bytes)."""
        if resource == "cpu":
            return self.min_cpu_cores, self.max_cpu_cores
        return self.min_memory_bytes, self.max_memory_bytes


@dataclass(frozen=True)
class GuardrailOutcome:
    """``planned`` holds only the fields that will change (None = unchanged)."""

    planned: Resources
    decisions: tuple[str, ...]
    blocked: str | None = None  # the reason nothing is applied for this container


def _fmt(resource: str, value: float) -> str:
    return format_cpu(value) if resource == "cpu" else format_memory(value)


@dataclass(frozen=True)
class Context:
    """What every rule sees of the change being evaluated."""

    change: ResourceChange
    settings: GuardrailSettings
    now: float
    last_applied_at: float | None
    hpa_resources: frozenset[str]


@dataclass(frozen=True)
class FieldValue:
    """One resource field on its way through the field rules; ``value`` is its value so far."""

    field: str  # "cpu_request"
    resource: str  # "cpu" | "memory"
    name: str  # "cpu request"
    current: float | None
    value: float

    def fmt(self, value: float) -> str:
        return _fmt(self.resource, value)


NEXT, KEEP, BLOCK = "next", "keep", "block"


@dataclass(frozen=True)
class Verdict:
    """A field rule's answer: the value from now on, the sentence for the plan (if any), and what comes next:
    ``next`` rule, ``keep`` the current value of this field, or ``block`` the whole container."""

    value: float
    decision: str | None = None
    then: str = NEXT


@dataclass(frozen=True)
class ContainerVerdict:
    """A container rule's answer: the planned fields from now on, its sentences, the blocking reason (if any)."""

    planned: Mapping[str, float]
    decisions: tuple[str, ...] = ()
    blocked: str | None = None


# -- the workload rule -----------------------------------------------------------------------------------------
def cooldown(ctx: Context) -> str | None:
    """The blocking reason while the workload's last apply is younger than ``cooldown_s``."""
    s, last = ctx.settings, ctx.last_applied_at
    if last is None or not ctx.now - last < s.cooldown_s:
        return None
    left = s.cooldown_s - (ctx.now - last)
    return (f"cooldown: {ctx.change.workload} was changed {(ctx.now - last) / 3600:.1f} h ago, "
            f"the cooldown is {s.cooldown_s / 3600:.1f} h ({left / 3600:.1f} h left)")


# -- the field rules, in their order ---------------------------------------------------------------------------
def hpa_scaled(ctx: Context, fv: FieldValue) -> Verdict | None:
    if fv.resource not in ctx.hpa_resources:
        return None
    return Verdict(fv.value, f"{fv.name}: kept, a HorizontalPodAutoscaler scales {ctx.change.workload} on "
                             f"{fv.resource}", KEEP)


def bounds(ctx: Context, fv: FieldValue) -> Verdict | None:
    lo, hi = ctx.settings.bounds(fv.resource)
    if fv.value < lo:
        return Verdict(lo, f"{fv.name}: raised to the minimum {fv.fmt(lo)} (recommended {fv.fmt(fv.value)})")
    if fv.value > hi:
        return Verdict(hi, f"{fv.name}: lowered to the maximum {fv.fmt(hi)} (recommended {fv.fmt(fv.value)})")
    return None


def max_step(ctx: Context, fv: FieldValue) -> Verdict | None:
    s, current = ctx.settings, fv.current
    if not current:
        return None
    floor = current * (1 - s.max_step_down)
    ceiling = current * s.max_step_up_factor
    if fv.value < floor:
        return Verdict(floor, f"{fv.name}: step limited to -{s.max_step_down:.0%} of {fv.fmt(current)} "
                              f"-> {fv.fmt(floor)} (recommended {fv.fmt(fv.value)})")
    if fv.value > ceiling:
        return Verdict(ceiling, f"{fv.name}: step limited to x{s.max_step_up_factor:g} of {fv.fmt(current)} "
                                f"-> {fv.fmt(ceiling)} (recommended {fv.fmt(fv.value)})")
    return None


def memory_peak_floor(ctx: Context, fv: FieldValue) -> Verdict | None:
    peak = ctx.change.memory_peak_bytes
    if not (fv.resource == "memory" and ctx.settings.memory_peak_floor and peak is not None and fv.value < peak):
        return None
    hi = ctx.settings.bounds(fv.resource)[1]
    if peak > hi:
        return Verdict(fv.value, f"{fv.name}: the observed peak {fv.fmt(peak)} is above the maximum "
                                 f"{fv.fmt(hi)}; not changed", BLOCK)
    return Verdict(peak, f"{fv.name}: raised to the observed peak {fv.fmt(peak)} (would have been "
                         f"{fv.fmt(fv.value)})")


def round_to_quantity(ctx: Context, fv: FieldValue) -> Verdict | None:
    return Verdict(round_cpu(fv.value) if fv.resource == "cpu" else round_memory(fv.value))


def min_change(ctx: Context, fv: FieldValue) -> Verdict | None:
    s, current = ctx.settings, fv.current
    if not current or not abs(fv.value - current) / current < s.min_change_fraction:
        return None
    return Verdict(fv.value, f"{fv.name}: kept at {fv.fmt(current)}, the change to {fv.fmt(fv.value)} is "
                             f"below {s.min_change_fraction:.0%}", KEEP)


def unchanged(ctx: Context, fv: FieldValue) -> Verdict | None:
    if fv.current is not None and math.isclose(fv.value, fv.current):
        return Verdict(fv.value, None, KEEP)
    return None


# -- the container rules, in their order -----------------------------------------------------------------------
_PAIRS = (("cpu_request", "cpu_limit"), ("memory_request", "memory_limit"))


def gpu_reported_only(ctx: Context, planned: Mapping[str, float]) -> ContainerVerdict | None:
    current, recommended = ctx.change.current, ctx.change.recommended
    if recommended.gpu is None or recommended.gpu == current.gpu:
        return None
    return ContainerVerdict(planned, (f"gpu: {current.gpu or 0} -> {recommended.gpu} is reported only; GPU counts "
                                      "are changed by rescheduling, not by a resource patch",))


def limit_not_below_request(ctx: Context, planned: Mapping[str, float]) -> ContainerVerdict | None:
    out, decisions = dict(planned), []
    for req, lim in _PAIRS:
        request = out.get(req, getattr(ctx.change.current, req))
        if lim in out and request is not None and out[lim] < request:
            resource = req.split("_")[0]
            decisions.append(f"{lim.replace('_', ' ')}: raised to the request {_fmt(resource, request)} "
                             f"(would have been {_fmt(resource, out[lim])}; a limit below its request is invalid)")
            out[lim] = request
    return ContainerVerdict(out, tuple(decisions)) if decisions else None


def request_not_above_limit(ctx: Context, planned: Mapping[str, float]) -> ContainerVerdict | None:
    after = ctx.change.current.merged(_resources(planned))
    for req, lim in _PAIRS:
        r, lv = getattr(after, req), getattr(after, lim)
        if r is not None and lv is not None and r > lv:
            msg = (f"{req.replace('_', ' ')} {r:g} would be above {lim.replace('_', ' ')} {lv:g} after the "
                   "guardrails; not changed")
            return ContainerVerdict(planned, (msg,), blocked=msg)
    return None


WorkloadRule = Callable[[Context], str | None]
FieldRule = Callable[[Context, FieldValue], Verdict | None]
ContainerRule = Callable[[Context, Mapping[str, float]], ContainerVerdict | None]

WORKLOAD_RULES: tuple[WorkloadRule, ...] = (cooldown,)
FIELD_RULES: tuple[FieldRule, ...] = (hpa_scaled, bounds, max_step, memory_peak_floor, round_to_quantity,
                                      min_change, unchanged)
CONTAINER_RULES: tuple[ContainerRule, ...] = (gpu_reported_only, limit_not_below_request, request_not_above_limit)
#: Every guardrail, in the order they are applied (the module docstring lists them so).
GUARDRAILS: tuple[Callable[..., object], ...] = (*WORKLOAD_RULES, *FIELD_RULES, *CONTAINER_RULES)


def _resources(planned: Mapping[str, float]) -> Resources:
    return Resources(**{k: (int(v) if k.startswith("memory") else v) for k, v in planned.items()})


def _field_values(change: ResourceChange) -> Iterator[FieldValue]:
    """The fields the recommendation sets, in ``RESOURCE_FIELDS`` order, each at its recommended value."""
    for field, section, resource in RESOURCE_FIELDS:
        target = getattr(change.recommended, field)
        if target is not None:
            yield FieldValue(field, resource, f"{resource} {section[:-1]}", getattr(change.current, field),
                             float(target))


def _apply_field_rules(ctx: Context, fv: FieldValue, decisions: list[str]) -> tuple[float | None, str | None]:
    """Run :data:`FIELD_RULES` on one field, adding their sentences to ``decisions``: (the value to plan, None
    to keep the current one; the blocking reason, None if the field does not block the container)."""
    for rule in FIELD_RULES:
        verdict = rule(ctx, fv)
        if verdict is None:
            continue
        if verdict.decision:
            decisions.append(verdict.decision)
        if verdict.then == BLOCK:
            return None, verdict.decision
        if verdict.then == KEEP:
            return None, None
        fv = replace(fv, value=verdict.value)
    return fv.value, None


def evaluate(change: ResourceChange, settings: GuardrailSettings, *, now: float,
             last_applied_at: float | None = None, hpa_resources: frozenset[str] = frozenset()) -> GuardrailOutcome:
    """Apply :data:`GUARDRAILS` to one (validated) change, in their order: the workload rules, the field rules
    on each field, the container rules."""
    ctx = Context(change, settings, now, last_applied_at, hpa_resources)
    for workload_rule in WORKLOAD_RULES:
        blocked = workload_rule(ctx)
        if blocked:
            return GuardrailOutcome(Resources(), (blocked,), blocked=blocked)
    decisions: list[str] = []
    planned: dict[str, float] = {}
    for fv in _field_values(change):
        value, blocked = _apply_field_rules(ctx, fv, decisions)
        if blocked:
            return GuardrailOutcome(Resources(), tuple(decisions), blocked=blocked)
        if value is not None:
            planned[fv.field] = value
    for container_rule in CONTAINER_RULES:
        verdict = container_rule(ctx, planned)
        if verdict is None:
            continue
        decisions += verdict.decisions
        if verdict.blocked:
            return GuardrailOutcome(Resources(), tuple(decisions), blocked=verdict.blocked)
        planned = dict(verdict.planned)
    return GuardrailOutcome(replace(_resources(planned), gpu_model=None), tuple(decisions))
