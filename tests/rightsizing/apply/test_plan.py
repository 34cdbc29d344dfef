"""Plans and guardrails without a cluster: every decision, the cost delta, bad input."""

from __future__ import annotations

import math

import pytest

from effopt.rightsizing.apply import ChangeError, GuardrailSettings, ResourceChange, Resources, WorkloadRef, build_plan
from tests.rightsizing.apply.conftest import GIB, MIB

WEB = WorkloadRef("Deployment", "shop", "web")
NOW = 1_800_000_000.0


def change(current: Resources, recommended: Resources, **kw) -> ResourceChange:
    return ResourceChange(kw.pop("workload", WEB), kw.pop("container", "app"), current, recommended,
                          kw.pop("reason", "p95 usage + 15%"), **kw)


def test_plan_lists_current_recommended_reason_and_cost_delta(rates):
    c = change(Resources(cpu_request=2, memory_request=2 * GIB, memory_limit=2 * GIB),
               Resources(cpu_request=1.5, memory_request=1536 * MIB, memory_limit=1536 * MIB), replicas=3)
    plan = build_plan([c], rates, now=NOW)
    (item,) = plan.items
    assert item.action == "apply" and item.decisions == ()
    d = item.to_dict()
    assert d["current"] == {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}
    assert d["planned"] == {"requests": {"cpu": "1500m", "memory": "1536Mi"}, "limits": {"memory": "1536Mi"}}
    assert d["reason"] == "p95 usage + 15%"
    # 3 replicas x (-0.5 vCPU x 0.04 + -0.5 GiB x 0.005) x 730 h
    expected = 3 * (-0.5 * 0.04 - 0.5 * 0.005) * 730
    assert item.monthly_cost_delta == pytest.approx(expected)
    assert plan.to_dict()["monthly_cost_delta"] == pytest.approx(expected)


def test_step_bound_and_peak_guardrails_are_explained(rates):
    settings = GuardrailSettings(max_step_down=0.5, min_cpu_cores=0.1, min_memory_bytes=256 * MIB)
    c = change(Resources(cpu_request=2, memory_request=4 * GIB, memory_limit=4 * GIB),
               Resources(cpu_request=0.05, memory_request=512 * MIB, memory_limit=512 * MIB),
               memory_peak_bytes=3 * GIB)
    (item,) = build_plan([c], rates, settings, now=NOW).items
    assert item.action == "apply"
    # cpu: raised to the 100m minimum, then limited to -50% of 2 cores
    assert item.planned.cpu_request == 1.0
    # memory: -50% step gives 2Gi, but the observed peak 3Gi is the floor
    assert item.planned.memory_request == 3 * GIB and item.planned.memory_limit == 3 * GIB
    text = "\n".join(item.decisions)
    assert "cpu request: raised to the minimum 100m" in text
    assert "cpu request: step limited to -50% of 2 -> 1" in text
    assert "memory limit: raised to the observed peak 3Gi (would have been 2Gi)" in text


def test_upper_bound_and_step_up(rates):
    settings = GuardrailSettings(max_cpu_cores=4, max_step_up_factor=2)
    c = change(Resources(cpu_request=1, cpu_limit=8), Resources(cpu_request=6, cpu_limit=16))
    (item,) = build_plan([c], rates, settings, now=NOW).items
    assert item.planned.cpu_request == 2.0  # max 4, then at most x2 of 1
    assert item.planned.cpu_limit == 4.0  # lowered to the maximum (4 < 8 x 2)
    assert any("lowered to the maximum 4" in d for d in item.decisions)


def test_peak_above_maximum_blocks_the_container(rates):
    settings = GuardrailSettings(max_memory_bytes=2 * GIB)
    c = change(Resources(memory_request=GIB, memory_limit=GIB), Resources(memory_limit=1536 * MIB),
               memory_peak_bytes=3 * GIB)
    (item,) = build_plan([c], rates, settings, now=NOW).items
    assert item.action == "skip" and item.planned == Resources()
    assert "observed peak 3Gi is above the maximum 2Gi" in item.decisions[-1]


def test_small_changes_are_not_applied(rates):
    c = change(Resources(cpu_request=1.0, memory_request=GIB), Resources(cpu_request=0.97, memory_request=GIB))
    (item,) = build_plan([c], rates, now=NOW).items
    assert item.action == "unchanged" and item.monthly_cost_delta == 0
    assert "below 5%" in item.decisions[0]


def test_cooldown_blocks_a_recently_changed_workload(rates):
    c = change(Resources(cpu_request=2), Resources(cpu_request=1))
    recent = build_plan([c], rates, now=NOW, last_applied=lambda w: NOW - 3600).items[0]
    assert recent.action == "skip" and "cooldown" in recent.decisions[0] and "23.0 h left" in recent.decisions[0]
    old = build_plan([c], rates, now=NOW, last_applied=lambda w: NOW - 25 * 3600).items[0]
    assert old.action == "apply"


def test_hpa_on_cpu_keeps_cpu_but_changes_memory(rates):
    c = change(Resources(cpu_request=2, memory_request=2 * GIB), Resources(cpu_request=1, memory_request=GIB))
    (item,) = build_plan([c], rates, now=NOW, hpa_resources={WEB: frozenset({"cpu"})}).items
    assert item.action == "apply" and item.planned.cpu_request is None and item.planned.memory_request == GIB
    assert "HorizontalPodAutoscaler scales Deployment shop/web on cpu" in item.decisions[0]


def test_request_above_limit_after_guardrails(rates):
    # the request may drop by 50% only (to 1Gi), the recommended limit is 600Mi: the new limit follows the request
    settings = GuardrailSettings(max_step_down=0.5)
    c = change(Resources(memory_request=2 * GIB, memory_limit=4 * GIB),
               Resources(memory_request=512 * MIB, memory_limit=2 * GIB))
    (item,) = build_plan([c], rates, settings, now=NOW).items
    assert item.action == "apply"
    c2 = change(Resources(memory_request=2 * GIB), Resources(memory_request=512 * MIB, memory_limit=600 * MIB))
    (item2,) = build_plan([c2], rates, settings, now=NOW).items
    assert item2.action == "apply" and item2.after.memory_limit == item2.after.memory_request == GIB


def test_missing_gpu_price_is_reported_not_zero(rates):
    c = change(Resources(cpu_request=4, gpu=1, gpu_model="H100"), Resources(cpu_request=2))
    plan = build_plan([c], rates, now=NOW)
    (item,) = plan.items
    assert item.monthly_cost_delta is None and plan.monthly_cost_delta() is None
    assert any("GPU model 'H100'" in m for m in plan.to_dict()["missing_prices"])


def test_bad_changes_are_all_reported_and_nothing_planned(rates):
    bad = [
        change(Resources(cpu_request=math.nan), Resources(cpu_request=1)),
        change(Resources(cpu_request=1), Resources(memory_request=-5), container="other"),
        change(Resources(cpu_request=1), Resources(cpu_request=2), container="other"),
        change(Resources(cpu_request=1), Resources(cpu_request=2), reason="", container="third"),
    ]
    with pytest.raises(ChangeError) as err:
        build_plan(bad, rates, now=NOW)
    msg = str(err.value)
    assert "Deployment shop/web container app current: cpu_request = nan" in msg
    assert "container other recommended: memory_request = -5" in msg
    assert "container other: listed twice" in msg
    assert "container third: a change needs a reason" in msg
    with pytest.raises(ChangeError, match="max_step_down"):
        GuardrailSettings(max_step_down=1.5)


def test_a_new_limit_is_raised_to_a_step_limited_request():
    """Memory request = limit = 408 MiB recommended from 2 GiB (no limit yet): the -50% step holds the
    request at 1 GiB, so the new limit must follow it rather than block the change."""
    from effopt.rightsizing.apply import ResourceChange, Resources, WorkloadRef
    from effopt.rightsizing.apply.guardrails import GuardrailSettings, evaluate

    gib = 2**30
    change = ResourceChange(WorkloadRef("Deployment", "ml", "trainer"), "main",
                            Resources(cpu_request=2.0, memory_request=2 * gib),
                            Resources(cpu_request=0.51, memory_request=408 * 2**20, memory_limit=408 * 2**20),
                            reason="test", memory_peak_bytes=400 * 2**20)
    outcome = evaluate(change, GuardrailSettings(), now=0.0, last_applied_at=None, hpa_resources=frozenset())
    assert not outcome.blocked, outcome.decisions
    assert outcome.planned.memory_request == outcome.planned.memory_limit == gib
    assert outcome.planned.cpu_request == 1.0
    assert any("memory limit: raised to the request 1Gi" in d for d in outcome.decisions)
