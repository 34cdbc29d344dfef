"""Uniform Progress and greedy on small hand-made traces, against decisions worked out by hand.

Job C = 4 h, D = 8 h, d = 0.5 h, tick 0.5 h unless said otherwise; the line is
t * C / D = t / 2.
"""

from __future__ import annotations

import numpy as np

from effopt.spot.policies import GreedyPolicy, Job, UniformProgressPolicy
from effopt.spot.simulate import simulate_job


def decisions(policy, job, avail, tick=0.5):
    out = []
    res = simulate_job(policy, job, np.array(avail, dtype=bool), 0, tick, trace=lambda i, o, a: out.append(str(a)))
    return out, res


def test_catch_up_to_on_demand_when_behind_the_line_then_hysteresis_until_the_line_at_t_plus_2d():
    # t=0: done 0 = line 0, not behind, no spot -> wait.  t=0.5: line 0.25 > 0 -> on-demand (changeover until 1.0).
    # Spot is back from t=1.0 on, but on on-demand UP stays while (t + 2d) * C/D - done >= 0:
    #   t=1.0: 1.0 - 0.0; t=1.5: 1.25 - 0.5; t=2.0: 1.5 - 1.0; t=2.5: 1.75 - 1.5; t=3.0: 2.0 - 2.0 = 0 -> stay;
    #   t=3.5: 2.25 - 2.5 < 0 -> spot.
    acts, res = decisions(UniformProgressPolicy(), Job(4, 8, 0.5), [0, 0] + [1] * 20)
    assert acts[:8] == ["wait", "on-demand", "on-demand", "on-demand", "on-demand", "on-demand", "on-demand",
                        "spot@0"]
    assert res.on_demand_h == 3.0 and res.changeovers == 2 and not res.missed


def test_on_demand_is_kept_while_spot_is_unavailable_even_ahead_of_the_line():
    acts, res = decisions(UniformProgressPolicy(), Job(4, 8, 0.5), [0] * 30)
    assert acts == ["wait"] + ["on-demand"] * 9  # 0.5 h changeover + 4 h of work, never released
    assert res.finish_h == 5.0


def test_safety_net_goes_on_demand_when_time_left_is_below_work_left_plus_2d():
    # C=2, D=4: spot for 4 ticks (0.5 h changeover + 1.5 h work), lost at t=2.0 with 0.5 h left, ahead of the line
    # (1.5 > 1.0) -> wait.  t=2.5: ceil((0.5 + 1.0) / 0.5) * 0.5 = 1.5 >= 4 - 2.5 -> on-demand (the line alone,
    # 1.25 < 1.5, would have waited).
    acts, res = decisions(UniformProgressPolicy(), Job(2, 4, 0.5), [1, 1, 1, 1] + [0] * 20)
    assert acts == ["spot@0"] * 4 + ["wait", "on-demand", "on-demand"]
    assert res.finish_h == 3.5 and not res.missed


def test_greedy_waits_until_the_last_safe_moment_then_stays_on_demand():
    # No spot: R - (W + 2d) = 4 - t - 3 hits 0 at t = 1.0.
    acts, res = decisions(GreedyPolicy(), Job(2, 4, 0.5), [0] * 20)
    assert acts == ["wait", "wait"] + ["on-demand"] * 5
    assert res.finish_h == 3.5
    acts, _ = decisions(GreedyPolicy(), Job(2, 4, 0.5), [0, 0, 0, 1, 1, 1, 1, 1, 1])
    assert acts[3:] == ["on-demand"] * 4  # spot back at t=1.5, but greedy is past its last safe moment


def test_several_zones_take_the_first_zone_with_spot_and_keep_it():
    avail = [[0, 0, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 1, 1, 1, 1, 1, 1]]
    acts, res = decisions(UniformProgressPolicy(), Job(2, 6, 0.5), avail)
    # zone 1 first (zone 0 has none); zone 1 drops at tick 3 -> move to zone 0 and stay there.
    assert acts[:3] == ["spot@1", "spot@1", "spot@1"] and set(acts[3:]) == {"spot@0"}
    assert res.preemptions == 1 and res.changeovers == 2
