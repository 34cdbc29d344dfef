"""Issue 19: the hindsight limit and the gap closed, leave-containers-out priors, the localized cold-start prior
and what a recommendation says about resting on the fleet.

Expected values are derived by hand in the comments.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from effopt.metrics.series import UsageSeries, make_series
from effopt.rightsizing import EffoptRecommender, backtest, get_recommender
from effopt.rightsizing.backtest import fold_of, gap_closed
from effopt.rightsizing.base import Evidence, Recommendation, Recommender
from effopt.rightsizing.effopt import FleetPool, FleetPrior, interval_spreads

GIB = 1024**3
T0 = 1_700_000_000.0


class Fixed(Recommender):
    """Recommends a fixed value per decision."""

    name = "fixed"
    settings_class = dict

    def __init__(self, values: list[float]) -> None:
        self.values = list(values)

    def recommend(self, series, previous=None, prior=None):
        v = self.values.pop(0)
        return Recommendation(series.workload, series.container, series.resource, series.unit, "fixed", v, v, v,
                              0.0, Evidence(len(series), None, None, None, "fixed"))


def one_container() -> UsageSeries:
    # samples every 30 min for 3 h; warmup 1 h, step 1 h: windows (0.4, 0.6) at 1 h and (0.5, 0.9) at 2 h
    ts = T0 + 1800.0 * np.arange(6)
    return make_series("w", "c", "memory", ts, np.array([0.1, 0.1, 0.4, 0.6, 0.5, 0.9]), unit="fraction")


# -- the hindsight limit and the gap closed ---------------------------------------------------------------------
def test_gap_closed_by_hand():
    res = backtest([one_container()], {"vpa": Fixed([1.0, 1.0]), "a": Fixed([0.9, 0.9]), "b": Fixed([1.0, 0.9])},
                   step_s=3600, warmup_s=3600)
    # hindsight: the peak of the scored windows, 0.9: slack (0.5 + 0.3 + 0.4 + 0) / 0.9 / 4 = 1/3, no overrun
    assert res.hindsight.mean_slack == pytest.approx(1 / 3) and res.hindsight.overrun_events == 0
    # vpa at 1.0: (0.6 + 0.4 + 0.5 + 0.1) / 4 = 0.4; b: (0.6 + 0.4 + 0.4/0.9 + 0) / 4 = 13/36
    assert res.recommenders["vpa"].mean_slack == pytest.approx(0.4)
    assert res.recommenders["b"].mean_slack == pytest.approx(13 / 36)
    # gap closed = (0.4 - slack) / (0.4 - 1/3): vpa 0, a (the hindsight limit itself) 1, b (14.4 - 13) / 2.4 = 7/12
    assert res.gap_closed("vpa") == 0.0
    assert res.gap_closed("a") == pytest.approx(1.0)
    assert res.gap_closed("b") == pytest.approx(7 / 12)
    out = res.as_json(by_history=True)
    assert out["hindsight"] == {"mean_slack": pytest.approx(1 / 3)}
    assert out["recommenders"]["b"]["gap_closed"] == pytest.approx(7 / 12)
    # by hours of history: the 1 h band (window 0.4, 0.6) and the 2 h band (0.5, 0.9); the hindsight limit stays 0.9
    one, two = res.by_history
    assert (one.hours, one.windows, two.hours, two.windows) == (1, 1, 2, 1)
    # 1 h: vpa and b at 1.0 -> 0.5, hindsight (0.5 + 0.3) / 0.9 / 2 = 4/9: b closes 0 of the gap
    assert one.recommenders["b"].mean_slack == pytest.approx(0.5) and one.hindsight.mean_slack == pytest.approx(4 / 9)
    assert one.gap_closed("b") == pytest.approx(0.0)
    # 2 h: vpa (0.5 + 0.1) / 2 = 0.3, b at 0.9 = the hindsight limit (0.4/0.9 + 0) / 2 = 2/9: all the gap
    assert two.recommenders["vpa"].mean_slack == pytest.approx(0.3) and two.gap_closed("b") == pytest.approx(1.0)
    assert [b["hours"] for b in out["by_history"]] == [1, 2]
    assert out["by_history"][1]["recommenders"]["b"]["gap_closed"] == pytest.approx(1.0)


def test_gap_closed_is_null_where_undefined_never_nan():
    # VPA at the hindsight limit itself: no gap to close, so no gap closed for anyone (null in JSON, not NaN)
    res = backtest([one_container()], {"vpa": Fixed([0.9, 0.9]), "b": Fixed([1.0, 0.9])}, step_s=3600, warmup_s=3600)
    assert res.gap_closed("b") is None and res.gap_closed("vpa") is None
    text = json.dumps(res.as_json(by_history=True), allow_nan=False)
    assert json.loads(text)["recommenders"]["b"]["gap_closed"] is None
    # without VPA there is no baseline
    res = backtest([one_container()], {"b": Fixed([1.0, 0.9])}, step_s=3600, warmup_s=3600)
    assert res.gap_closed("b") is None and res.by_history[0].gap_closed("b") is None
    assert gap_closed(0.3, 0.4, 0.4) is None and gap_closed(float("nan"), 0.4, 0.2) is None
    assert gap_closed(0.3, 0.4, 0.2) == pytest.approx(0.5)


# -- leave containers out -------------------------------------------------------------------------------------------
def fleet(n: int = 9, hours: float = 14, seed: int = 3) -> list[UsageSeries]:
    rng = np.random.default_rng(seed)
    ts = T0 + 60.0 * np.arange(int(hours * 60))
    return [make_series(f"w{i}", f"c{i}", "memory", ts, GIB * (1 + i) * rng.lognormal(0.0, 0.1, ts.size))
            for i in range(n)]


class PriorSpy(EffoptRecommender):
    """effopt that records, for every decision, whose data the prior it was passed holds and up to when."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[tuple[str, str, str], float, FleetPrior]] = []

    def recommend(self, series, previous=None, prior=None):
        self.seen.append((series.key, float(series.timestamps[-1]), prior))
        return super().recommend(series, previous, prior)


@pytest.mark.parametrize("folds", [1, 3])
def test_a_prior_never_holds_data_at_or_after_the_decision_nor_with_folds_the_container_itself(folds):
    series = fleet()
    spy = PriorSpy()
    backtest(series, {"effopt": spy}, step_s=3600, warmup_s=4 * 3600, folds=folds)
    assert len(spy.seen) >= 9 * 9
    groups = {s.key: fold_of(s, folds) for s in series}
    for key, history_end, prior in spy.seen:
        # every series shares the minute grid: a prior that saw anything at or after the decision time would hold
        # a sample later than the last one the decision saw
        assert prior is not None and prior.data_end is not None and prior.data_end <= history_end
        if folds > 1:
            assert key not in prior.keys  # left out: nothing of the container itself
            assert {k for k in prior.keys if groups[k] == groups[key]} == set()  # nor of its group
            assert prior.keys  # the other groups are there
        else:
            assert key in prior.keys  # in-sample: its own past is part of the fleet
    assert len(set(groups.values())) == folds  # the hash spreads these containers over every group


def test_leaving_out_a_containers_own_data_cannot_change_its_prior():
    # the same fleet twice, with container c0 replaced by a wildly different one (past and future): with folds its
    # priors must be the very same, decision by decision; in-sample they may not be
    series = fleet()
    other = make_series("w0", "c0", "memory", series[0].timestamps, np.where(
        series[0].timestamps > T0 + 5 * 3600, 40 * GIB, 0.1 * GIB))

    def priors_of_c0(fleet_: list[UsageSeries], folds: int) -> list[tuple[float, dict]]:
        spy = PriorSpy()
        backtest(fleet_, {"effopt": spy}, step_s=3600, warmup_s=4 * 3600, folds=folds)
        return [(t, p.margins) for key, t, p in spy.seen if key == ("w0", "c0", "memory")]

    left_out = priors_of_c0(series, 3)
    assert left_out == priors_of_c0([other, *series[1:]], 3)
    in_sample = priors_of_c0(series, 1)
    assert in_sample != priors_of_c0([other, *series[1:]], 1)  # the test can see a leak: in-sample it differs


def test_in_sample_a_containers_future_cannot_change_its_prior():
    # in-sample, c0's own past may shape its prior, its future may not: change c0 only after 9 h, and the priors of
    # its decisions up to 9 h stay the same
    series = fleet()
    cut = T0 + 9 * 3600
    later = make_series("w0", "c0", "memory", series[0].timestamps,
                        np.where(series[0].timestamps >= cut, 30 * GIB, series[0].values))

    def priors(fleet_: list[UsageSeries]) -> list[tuple[float, dict]]:
        spy = PriorSpy()
        backtest(fleet_, {"effopt": spy}, step_s=3600, warmup_s=4 * 3600, folds=1)
        return [(t, p.margins) for key, t, p in spy.seen if key == ("w0", "c0", "memory") and t < cut]

    before = priors(series)
    assert len(before) == 6 and before == priors([later, *series[1:]])  # the decisions at 4, 5, ..., 9 h


def test_folds_are_checked_and_stable():
    s = fleet(1)[0]
    assert fold_of(s, 1) == 0 and fold_of(s, 5) == fold_of(s, 5) and 0 <= fold_of(s, 5) < 5
    with pytest.raises(ValueError, match="folds must be >= 1"):
        backtest([s], {"vpa": get_recommender("vpa")}, folds=0)


# -- the localized cold-start prior ---------------------------------------------------------------------------------
def test_localized_quantile_by_hand():
    # four pooled rises: two of containers of size e^0 (1.0, 1.1), two of size e^5 (1.5, 2.0), weights 1, bandwidth 1
    pool = FleetPool(np.array([1.0, 1.1, 1.5, 2.0]), np.ones(4), np.array([0.0, 0.0, 5.0, 5.0]), 1.0)
    near_small, n_small = pool.localized(0.0, 0.98)
    near_big, n_big = pool.localized(5.0, 0.98)
    # around e^0 the kernel weighs the far pair exp(-12.5) ~ 4e-6: the 98% quantile is the larger small one, 1.1
    assert near_small == 1.1 and near_big == 2.0
    assert n_small == pytest.approx(2.0, rel=1e-4) and n_big == pytest.approx(2.0, rel=1e-4)
    assert FleetPool(pool.ratios, pool.weights, pool.log_sizes, 0.0).localized(0.0, 0.98) is None  # no spread
    # the prior: the local 0.1 shrunk toward the fleet's 0.5 with fleet_min_ratios (20) ratios:
    # (0.1 * 2 + 0.5 * 20) / 22
    prior = FleetPrior({"memory": (0.5, 100, 4)}, T0, {"memory": pool})
    rec = EffoptRecommender()
    margin, note = rec.prior_margin("memory", prior, 1.0)
    assert margin == pytest.approx((0.1 * 2 + 0.5 * 20) / 22, rel=1e-4)
    assert "containers of its size" in note
    assert rec.prior_margin("memory", prior)[0] == 0.5  # no size: the whole fleet's
    assert EffoptRecommender(localize_prior=False).settings.localize_prior is False
    assert rec.prior_margin("memory", FleetPrior({"memory": (0.5, 10, 4)}, T0))[0] == 0.15  # too few: fixed 15%


def test_a_young_container_gets_the_prior_of_containers_of_its_size():
    # a fleet of small containers whose hourly level jumps at random (lognormal, sigma 0.25) and large flat ones
    # (40 GiB, within 1%); a young container of each size gets the margin of its kind, the whole fleet's in between
    ts = T0 + 60.0 * np.arange(16 * 60)
    hour = ((ts - T0) // 3600).astype(int)
    rng = np.random.default_rng(5)
    small = [make_series(f"s{i}", "c", "gpu_memory", ts, GIB * rng.lognormal(0.0, 0.25, 16)[hour]
                         * rng.uniform(0.99, 1.0, ts.size)) for i in range(12)]
    large = [make_series(f"l{i}", "c", "gpu_memory", ts, 40 * GIB * rng.uniform(0.99, 1.0, ts.size))
             for i in range(12)]
    rec = EffoptRecommender()
    prior = rec.calibrate([*small, *large])
    young_small = make_series("ys", "c", "gpu_memory", ts[:90], GIB * rng.uniform(0.99, 1.0, 90))
    young_large = make_series("yl", "c", "gpu_memory", ts[:90], 40 * GIB * rng.uniform(0.99, 1.0, 90))
    m_small = rec.prior_margin("gpu_memory", prior, float(young_small.values.max()))[0]
    m_large = rec.prior_margin("gpu_memory", prior, float(young_large.values.max()))[0]
    whole = rec.prior_margin("gpu_memory", prior)[0]
    small_only = rec.calibrate(small).margins["gpu_memory"][0]  # the small ones' own fleet: ~0.19
    assert m_large < 0.05 < whole < m_small  # flat large ones: ~0; small jumpy ones: their jumps
    assert m_small > 0.8 * small_only
    r_small = rec.recommend(young_small, None, prior)
    r_large = rec.recommend(young_large, None, prior)
    assert r_small.target / young_small.values.max() > r_large.target / young_large.values.max()


def test_interval_spreads_are_each_hours_range_in_the_order_of_the_statistics():
    ts = T0 + 600.0 * np.arange(18)  # 3 hours of 10-minute samples, aligned to the last one
    vs = np.array([5.0] * 6 + [4.0, 8.0, 8.0, 6.0, 8.0, 8.0] + [0.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    # interval_stats aligns intervals to the last sample: [ts0..ts4] is partly the oldest hour (ts0 alone falls
    # in a fourth, older interval)
    starts, peaks = EffoptRecommender()._replay(make_series("w", "c", "gpu_memory", ts, vs))[:2]
    spreads = interval_spreads(ts, vs, 3600.0)
    assert spreads.size == peaks.size == starts.size
    idx = np.floor((ts[-1] - ts) / 3600.0).astype(int)
    for k, i in enumerate(sorted(set(idx.tolist()), reverse=True)):  # oldest first
        chunk = vs[idx == i]
        assert peaks[k] == chunk.max()
        assert spreads[k] == pytest.approx(1 - chunk.min() / chunk.max())
    assert interval_spreads(ts, np.zeros(ts.size), 3600.0).tolist() == [0.0] * spreads.size  # no 0/0


def test_a_steady_container_gets_the_prior_of_rises_that_followed_steady_hours():
    """Leave-out conditioning on the container's state: in this fleet, an hour whose usage moved (a range of
    30%) is followed by a rise of 1.3x one time in five, a flat hour never.  A young container whose last
    hour was flat gets a smaller prior margin than one whose last hour moved, with the same size; without
    ``localize_by_spread`` both get the same."""
    ts = T0 + 60.0 * np.arange(20 * 60)
    hour = ((ts - T0) // 3600).astype(int)
    rng = np.random.default_rng(11)
    fleet_ = []
    for i in range(16):
        moving = rng.random(20) < 0.5  # which hours move within themselves
        base = np.ones(20)
        for h in range(1, 20):  # after a moving hour, one time in five, the next hour's peak is 1.3x
            base[h] = base[h - 1] * (1.3 if moving[h - 1] and rng.random() < 0.2 else 1.0)
        wobble = np.where(moving[hour], 1.0 - 0.3 * ((ts - T0) % 3600 < 1800), 1.0)
        fleet_.append(make_series(f"w{i}", "c", "gpu_memory", ts, 10 * GIB * base[hour] * wobble))
    rec = EffoptRecommender()
    prior = rec.calibrate(fleet_)
    size = 10 * GIB
    pool, q = prior.pools["gpu_memory"], rec.quantile
    assert pool.localized(math.log(size), q, 0.0)[0] == pytest.approx(1.0)  # after flat hours: no rise
    assert pool.localized(math.log(size), q, 0.3)[0] == pytest.approx(1.3)  # after moving ones: the jumps
    steady = rec.prior_margin("gpu_memory", prior, size, spread=0.0)[0]
    moved = rec.prior_margin("gpu_memory", prior, size, spread=0.3)[0]
    whole = prior.margins["gpu_memory"][0]
    assert steady < whole <= moved  # each shrunk toward the whole fleet's with fleet_min_ratios ratios
    young = ts[:4 * 60]
    flat = rec.recommend(make_series("y1", "c", "gpu_memory", young, np.full(young.size, size)), None, prior)
    wavy = rec.recommend(make_series("y2", "c", "gpu_memory", young, size * np.where(
        (young - T0) % 3600 < 1800, 0.7, 1.0)), None, prior)
    assert flat.target < wavy.target
    assert any("after an hour that moved as much as its last one (0%)" in n for n in flat.evidence.notes)
    assert any("after an hour that moved as much as its last one (30%)" in n for n in wavy.evidence.notes)
    plain = EffoptRecommender(localize_by_spread=False)
    p2 = plain.calibrate(fleet_)
    assert plain.prior_margin("gpu_memory", p2, size, spread=0.0) == plain.prior_margin("gpu_memory", p2, size,
                                                                                          spread=0.3)
    assert p2.pools["gpu_memory"].spreads is None


# -- honest output ---------------------------------------------------------------------------------------------
def test_evidence_and_confidence_say_when_a_recommendation_rests_on_the_fleet():
    series = fleet(6, hours=30)
    rec = EffoptRecommender()
    k, burn = rec.settings.prior_weight_intervals, rec.settings.burn_in_intervals
    prior = rec.calibrate(series)
    young = series[0].before(T0 + (burn + 1.5) * 3600)  # burn + 2 intervals: 1 own ratio after the start-up ones
    r = rec.recommend(young, None, prior)
    # the prior counts as k intervals against 1 of the container's own
    assert r.evidence.fleet_weight == pytest.approx(k / (k + 1)) and r.evidence.rests_on_fleet
    assert any(n.startswith(f"rests mostly on the fleet prior: it supplies {k / (k + 1):.0%} of the margin")
               for n in r.evidence.notes)
    assert r.as_dict()["evidence"]["rests_on"] == "fleet"
    days = min(float(young.timestamps[-1] - young.timestamps[0]) / 86400, young.values.size / 1440)
    assert r.confidence == pytest.approx(days / (1 + days) * (1 - k / (k + 1)))
    old = rec.recommend(series[0], None, prior)  # 30 intervals: 29 ratios, the first burn of them start-up ones
    assert old.evidence.fleet_weight == pytest.approx(k / (29 - burn + k)) and not old.evidence.rests_on_fleet
    assert old.as_dict()["evidence"]["rests_on"] == "own history"
    assert not any(n.startswith("rests mostly") for n in old.evidence.notes)
    assert get_recommender("vpa").recommend(series[0]).evidence.fleet_weight is None  # no prior at all
    uncalibrated = rec.recommend(young)
    assert any(n.startswith("rests mostly on the fixed prior margin") for n in uncalibrated.evidence.notes)
    assert math.isclose(uncalibrated.evidence.fleet_weight, k / (k + 1))
