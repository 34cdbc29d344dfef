"""Observed availability, the effopt plan, the offline optimum, and effopt on a real trace."""

from __future__ import annotations

import numpy as np
import pytest

from effopt.spot import planner
from effopt.spot.optimal import offline_optimum
from effopt.spot.policies import EffoptPolicy, GreedyPolicy, Job, Market, UniformProgressPolicy
from effopt.spot.risk import age_bucket, fit_availability_model, mean_residual_table, observe_zones
from effopt.spot.simulate import simulate_job
from tests.spot.test_simulator import _random_availability


def test_observed_zone_statistics_by_hand():
    # runs: up 2 (cut), down 3, up 3, down 1, up 1 (cut)
    series = np.array([1, 1, 0, 0, 0, 1, 1, 1, 0, 1], dtype=bool)
    (z,) = observe_zones(series[None, :], 0.5, ["a"])
    assert z.available_fraction == 0.6 and z.preemptions == 2
    assert z.preemptions_per_available_hour == pytest.approx(2 / 3.0)
    assert z.mean_available_h == 1.5 and z.mean_unavailable_h == 1.0  # complete runs only: up 3; down 3 and 1
    # mean residual life of runs [2, 4, 10] at age 3: (1 + 7 + 3 pseudo-runs x mean 16/3) / (2 + 3)
    t = mean_residual_table(np.array([2, 4, 10]), 5)
    assert t[3] == pytest.approx((1 + 7 + 3 * 16 / 3) / 5)
    assert [age_bucket(a) for a in (1, 2, 3, 4, 63, 64, 500)] == [0, 1, 1, 2, 5, 6, 6]


def test_the_zone_rule_prefers_the_larger_expected_saving():
    hist = _random_availability(5, 2, 4000)
    model = fit_availability_model(hist, 0.05, [2.0, 2.0])
    ages = [10, 400]
    assert model.pick([True, True], ages) == int(np.argmax([model.expected_remaining_h(z, a)
                                                            for z, a in enumerate(ages)]))
    cheaper = fit_availability_model(hist, 0.05, [2.0, 0.001])  # zone 1 saves almost nothing
    assert cheaper.pick([True, True], [1, 1]) == 0
    cont, end = model.matrices()
    assert np.allclose((cont + end).sum(axis=1), 1.0)


def test_offline_optimum_is_exact_on_trivial_traces_and_below_every_policy():
    g = 0.25
    always = np.ones(400, dtype=bool)
    assert offline_optimum(always, 4, 6, 0.25, g, 3.0, 1.0) == pytest.approx(1.0 * 4.25)
    assert offline_optimum(~always, 4, 6, 0.25, g, 3.0, 1.0) == pytest.approx(3.0 * 4.25)
    avail = _random_availability(9, 1, 3000)
    market = Market(3.0, (0.6,))
    for start in (500, 900, 1600):
        opt = offline_optimum(avail[:, start:start + 60], 10, 14, 0.25, g, 3.0, 0.6)
        for policy in (GreedyPolicy, UniformProgressPolicy, EffoptPolicy):
            r = simulate_job(policy(), Job(10, 14, 0.25), avail, start, g, market=market)
            assert r.cost >= opt - 1e-9


def test_the_plan_waits_for_spot_with_slack_and_takes_on_demand_without():
    hist = _random_availability(4, 1, 3000)
    model = fit_availability_model(hist, 0.25, [2.4])
    plan = planner.solve(6, 9, 0.25, 0.0, 0.25, 3.0, 0.6, model)
    gap = age_bucket(1)  # a gap that just started
    up = model.buckets + age_bucket(1)
    assert plan.action(plan.ticks, 3.0, planner.MACHINE["wait"], up) == planner.SPOT_A
    assert plan.action(plan.ticks, 3.0, planner.MACHINE["wait"], gap) == planner.WAIT_A  # lots of slack: wait
    assert plan.action(26, 0.25, planner.MACHINE["wait"], gap) == planner.OD_A  # 6.25 h left for 6 h of work
    assert planner.solve(6, 9, 0.25, 0.0, 0.25, 3.0, 0.6, model) is plan  # cached


def test_effopt_without_history_follows_uniform_progress():
    avail = _random_availability(2, 1, 400)
    seen = {}
    for policy in (EffoptPolicy(), UniformProgressPolicy()):
        acts = []
        simulate_job(policy, Job(6, 9, 0.25), avail, 20, 0.25, market=Market(3.0, (0.6,)),
                     trace=lambda i, o, a, acts=acts: acts.append(str(a)))
        seen[policy.name] = acts
    assert seen["effopt"] == seen["uniform-progress"]


def test_effopt_beats_uniform_progress_without_misses_on_a_real_zone(real_traces):
    from effopt.spot.traces import load_traces

    east = next(g for g in load_traces(real_traces) if g.label == "aws-02-15-2023/v100_1")
    avail = east.matrix(1, ("us-east-1c",))
    market = Market(3.06, (0.34445,))
    job = Job(48, 52, 0.2)
    costs = {"effopt": 0.0, "uniform-progress": 0.0}
    for start in (2000, 6000, 10000, 14000):
        for name, policy in (("effopt", EffoptPolicy), ("uniform-progress", UniformProgressPolicy)):
            r = simulate_job(policy(), job, avail, start, east.tick_h, market=market)
            assert not r.missed
            costs[name] += r.cost
    assert costs["effopt"] < costs["uniform-progress"]
