"""The guardrails as an ordered list of small rules: the order declared, documented and reported."""

from __future__ import annotations

import re

from effopt.rightsizing.apply import guardrails
from effopt.rightsizing.apply.guardrails import (
    BLOCK,
    GUARDRAILS,
    KEEP,
    Context,
    FieldValue,
    GuardrailSettings,
    Verdict,
    evaluate,
    max_step,
    memory_peak_floor,
)
from effopt.rightsizing.apply.model import ResourceChange, Resources, WorkloadRef

MIB = 1024**2
GIB = 1024**3
WEB = WorkloadRef("Deployment", "shop", "web")


def test_the_module_docstring_lists_the_rules_in_the_order_they_are_applied():
    documented = re.findall(r"^\s*\d+\. ``(\w+)``:", guardrails.__doc__ or "", flags=re.MULTILINE)
    assert documented == [rule.__name__ for rule in GUARDRAILS]
    assert documented[:2] == ["cooldown", "hpa_scaled"] and documented[-1] == "request_not_above_limit"


def test_the_decisions_of_one_field_come_in_rule_order():
    # memory request 4Gi -> 50Mi recommended, peak 3Gi: bounds (256Mi), then the -50% step (2Gi), then the peak
    settings = GuardrailSettings(min_memory_bytes=256 * MIB, max_step_down=0.5)
    change = ResourceChange(WEB, "app", Resources(memory_request=4 * GIB), Resources(memory_request=50 * MIB),
                            "p95 usage + 15%", memory_peak_bytes=3 * GIB)
    outcome = evaluate(change, settings, now=0.0)
    assert outcome.decisions == (
        "memory request: raised to the minimum 256Mi (recommended 50Mi)",
        "memory request: step limited to -50% of 4Gi -> 2Gi (recommended 256Mi)",
        "memory request: raised to the observed peak 3Gi (would have been 2Gi)",
    )
    assert outcome.planned == Resources(memory_request=3 * GIB) and outcome.blocked is None


def test_the_cooldown_comes_first_and_alone():
    change = ResourceChange(WEB, "app", Resources(cpu_request=2), Resources(cpu_request=0.001), "r")
    outcome = evaluate(change, GuardrailSettings(), now=10 * 3600.0, last_applied_at=4 * 3600.0,
                       hpa_resources=frozenset({"cpu"}))
    assert outcome.decisions == ("cooldown: Deployment shop/web was changed 6.0 h ago, the cooldown is 24.0 h "
                                 "(18.0 h left)",)
    assert outcome.blocked == outcome.decisions[0] and outcome.planned == Resources()


def test_each_rule_is_a_small_function_of_one_field():
    settings = GuardrailSettings(max_memory_bytes=2 * GIB)
    change = ResourceChange(WEB, "app", Resources(memory_request=GIB), Resources(memory_request=GIB // 4), "r",
                            memory_peak_bytes=3 * GIB)
    ctx = Context(change, settings, 0.0, None, frozenset())
    field = FieldValue("memory_request", "memory", "memory request", GIB, GIB / 4)
    assert max_step(ctx, field) == Verdict(GIB / 2, "memory request: step limited to -50% of 1Gi -> 512Mi "
                                                    "(recommended 256Mi)")
    assert max_step(ctx, FieldValue("memory_request", "memory", "memory request", GIB, 0.75 * GIB)) is None
    blocked = memory_peak_floor(ctx, field)
    assert blocked is not None and blocked.then == BLOCK
    assert blocked.decision == "memory request: the observed peak 3Gi is above the maximum 2Gi; not changed"
    assert guardrails.min_change(ctx, FieldValue("memory_request", "memory", "memory request", GIB,
                                                 1.01 * GIB)).then == KEEP
