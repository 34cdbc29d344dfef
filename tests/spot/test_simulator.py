"""The replay: conservation of work, what a preemption costs, launch failures, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from effopt.spot.errors import SpotError
from effopt.spot.policies import (
    EffoptPolicy,
    GreedyPolicy,
    Job,
    Market,
    OnDemandPolicy,
    UniformProgressPolicy,
)
from effopt.spot.simulate import Setting, run_setting, simulate_job


def _random_availability(seed: int, zones: int, ticks: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((zones, ticks), dtype=bool)
    for z in range(zones):  # alternating runs of random length, like the traces
        t, state = 0, bool(rng.integers(2))
        while t < ticks:
            n = int(rng.geometric(0.15))
            out[z, t:t + n] = state
            t += n
            state = not state
    return out


@pytest.mark.parametrize("policy", [OnDemandPolicy, GreedyPolicy, UniformProgressPolicy, EffoptPolicy])
@pytest.mark.parametrize("zones", [1, 3])
def test_work_is_conserved_and_costs_add_up(policy, zones):
    avail = _random_availability(7 + zones, zones, 900)
    market = Market(3.0, tuple(0.5 + 0.1 * z for z in range(zones)))
    for k, start in ((0.0, 400), (1.0, 420)):
        job = Job(12, 16, 0.2, k)
        r = simulate_job(policy(), job, avail, start, 0.1, market=market)
        useful = r.spot_h + r.on_demand_h - r.overhead_h - r.lost_work_h
        assert useful == pytest.approx(12, abs=1e-9)
        assert r.finished and not r.missed and r.finish_h <= 16 + 1e-9
        assert r.cost >= 0.5 * (r.spot_h) + 3.0 * r.on_demand_h - 1e-9
        assert r.cost <= (0.5 + 0.1 * (zones - 1)) * r.spot_h + 3.0 * r.on_demand_h + 1e-9
        if k == 0:
            assert r.lost_work_h == 0


def test_a_preemption_loses_the_work_since_the_last_checkpoint_plus_the_changeover():
    # tick 0.5 h, k = 1 h, d = 0.5 h.  Spot at ticks 0-5: 0.5 h changeover, 2.5 h of work, checkpoint at 2.0.
    # Preempted at tick 6 (t=3.0): 0.5 h lost.  Spot again from tick 7: another 0.5 h changeover, 2 h of work.
    avail = np.array([[1, 1, 1, 1, 1, 1, 0] + [1] * 20], dtype=bool)
    r = simulate_job(GreedyPolicy(), Job(4, 10, 0.5, 1.0), avail, 0, 0.5, market=Market(3.0, (1.0,)))
    assert (r.preemptions, r.lost_work_h, r.overhead_h, r.changeovers) == (1, 0.5, 1.0, 2)
    assert r.spot_h == 5.5 and r.finish_h == 6.0
    assert r.cost == pytest.approx(5.5)
    continuous = simulate_job(GreedyPolicy(), Job(4, 10, 0.5, 0.0), avail, 0, 0.5)
    assert continuous.lost_work_h == 0 and continuous.spot_h == 5.0  # k = 0 loses only the changeover


def test_on_demand_launch_failures_are_seeded_and_recorded():
    avail = np.zeros((1, 200), dtype=bool)
    runs = [simulate_job(OnDemandPolicy(), Job(2, 30, 0.1), avail, 0, 0.25, od_failure=0.6, seed=s) for s in (1, 1, 2)]
    assert runs[0].as_dict() == runs[1].as_dict()
    assert runs[0].failed_launches > 0
    assert runs[0].finish_h == pytest.approx(0.25 * runs[0].failed_launches + 2.1)
    with pytest.raises(SpotError, match="od_failure"):
        simulate_job(OnDemandPolicy(), Job(2, 30, 0.1), avail, 0, 0.25, od_failure=1.0)


def test_seeds_reproduce_a_setting_and_another_seed_moves_the_starts():
    avail = _random_availability(3, 2, 3000)
    st = Setting("synthetic", ("a", "b"), Job(6, 9, 0.2), od_failure=0.05)
    kw = dict(market=Market(3.0, (0.9, 0.9)), prices={"priced": True}, n_starts=5)
    pols = {"greedy": GreedyPolicy, "uniform-progress": UniformProgressPolicy}
    a = run_setting(st, avail, 0.05, pols, seed=11, **kw)
    b = run_setting(st, avail, 0.05, pols, seed=11, **kw)
    c = run_setting(st, avail, 0.05, pols, seed=12, **kw)
    assert a.starts == b.starts and a.as_dict() == b.as_dict()
    assert a.starts != c.starts
    assert min(a.starts) >= 750  # after the warm-up (a quarter of this 3000-tick trace: shorter than a week) ...
    assert max(a.starts) + 9 / 0.05 <= 3000  # ... and the whole window lies in the trace


def test_a_policy_asking_for_spot_where_there_is_none_is_a_bug_reported_as_such():
    class Bad(GreedyPolicy):
        def decide(self, obs):
            from effopt.spot.policies import spot_in

            return spot_in(0)

    with pytest.raises(SpotError, match="asked for spot in zone 0 at tick 0"):
        simulate_job(Bad(), Job(1, 3, 0.1), np.zeros((1, 50), dtype=bool), 0, 0.25)


@pytest.mark.parametrize("kwargs, expect", [
    (dict(work_h=48, deadline_h=40), "deadline_h = 40 h is shorter than its work"),
    (dict(work_h=48, deadline_h=52, changeover_h=-0.1), "changeover_h (d) = -0.1 must not be negative"),
    (dict(work_h=0, deadline_h=5), "work_h = 0 must be positive"),
])
def test_bad_jobs_are_refused_naming_the_parameter(kwargs, expect):
    with pytest.raises(SpotError) as err:
        Job(**kwargs)
    assert expect in str(err.value)


@pytest.mark.parametrize("policy", [GreedyPolicy, UniformProgressPolicy])
def test_with_checkpoints_no_preemption_time_can_cost_the_deadline(policy):
    # C = 4 h, D = 5 h, d = 0.25 h, k = 1 h, tick 0.25 h: spot until a drop at every possible tick. Keeping the
    # instance "until preemption" near the deadline would lose up to 1 h of work; the safety net leaves it first.
    for drop in range(1, 24):
        avail = np.array([[1] * drop + [0] * 40], dtype=bool)
        r = simulate_job(policy(), Job(4, 5, 0.25, 1.0), avail, 0, 0.25)
        assert not r.missed, drop
        assert r.spot_h + r.on_demand_h - r.overhead_h - r.lost_work_h == pytest.approx(4)


def test_expected_loss_at_a_preemption():
    from effopt.spot.planner import expected_loss_h

    assert expected_loss_h(0.5, 1.0) == pytest.approx(0.5 - 0.25 / 2)  # x - x^2 / 2k
    assert expected_loss_h(3.0, 1.0) == 0.5 and expected_loss_h(0.5, 0.0) == 0.0
