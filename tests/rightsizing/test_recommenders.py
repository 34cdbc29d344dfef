"""VPA, KRR and effopt recommenders against values derived by hand from their rules.

Hand derivations use the bucket formula of VPA's exponential histogram:
bucket ``i`` starts at ``first * (1.05**i - 1) / 0.05``; a value ``v >= first``
falls in bucket ``floor(log(v * 0.05 / first + 1) / log(1.05))``; a percentile
returns the END (the next bucket's start) of the bucket where the
cumulative weight reaches it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from effopt.metrics.series import make_series
from effopt.rightsizing import (
    EffoptRecommender,
    KrrRecommender,
    NotEnoughData,
    VpaRecommender,
    get_recommender,
    gpu_fit,
)
from effopt.rightsizing.histogram import CPU_OPTIONS, MEMORY_OPTIONS, DecayingHistogram
from effopt.rightsizing.vpa import memory_peaks

MIB = 1024**2
GIB = 1024**3
DAY = 86400
T0 = 1_700_000_000.0


def bucket_end(value: float, first: float) -> float:
    """By hand: the end of the VPA bucket holding ``value``."""
    b = math.floor(math.log(value * 0.05 / first + 1) / math.log(1.05))
    return first * (1.05 ** (b + 1) - 1) / 0.05


def minutes(days: float, start: float = T0) -> np.ndarray:
    return start + 60.0 * np.arange(int(days * 1440))


def test_histogram_layout_matches_vpa():
    # ~176 buckets each (ANCHORS: 0.01 core .. 1000 cores, 10 MB .. 1 TB)
    assert MEMORY_OPTIONS.num_buckets == 176
    assert CPU_OPTIONS.num_buckets == 1 + math.ceil(math.log(1000 * 0.05 / 0.01 + 1) / math.log(1.05))
    assert MEMORY_OPTIONS.bucket_start(0) == 0.0
    assert MEMORY_OPTIONS.bucket_start(1) == pytest.approx(1e7)
    assert MEMORY_OPTIONS.bucket_start(2) == pytest.approx(2.05e7)  # 1e7 + 1.05 * 1e7
    assert int(MEMORY_OPTIONS.find_bucket(5e6)) == 0
    assert int(MEMORY_OPTIONS.find_bucket(1.5e7)) == 1
    assert int(MEMORY_OPTIONS.find_bucket(5e15)) == MEMORY_OPTIONS.num_buckets - 1


def test_percentile_returns_bucket_end():
    h = DecayingHistogram(MEMORY_OPTIONS)
    h.add(1.5e7)
    assert h.percentile(0.5) == pytest.approx(2.05e7)  # end of bucket 1, not the value
    h.add([1 * GIB, 1 * GIB, 1 * GIB])
    # weights: 1 in bucket(1.5e7), 3 in bucket(1 GiB): p20 -> first bucket end, p30 -> 1 GiB's bucket end
    assert h.percentile(0.2) == pytest.approx(2.05e7)
    assert h.percentile(0.3) == pytest.approx(bucket_end(GIB, 1e7))
    assert DecayingHistogram(CPU_OPTIONS).percentile(0.9) == 0.0  # empty


def test_decay_halves_weight_per_half_life():
    # 0.5 core at t, 1.0 core one half-life later: weights 1 and 2 -> p50 threshold 1.5 reaches the 1.0 bucket
    h = DecayingHistogram(CPU_OPTIONS, half_life_s=DAY)
    h.add([0.5, 1.0], 1.0, [T0, T0 + DAY])
    assert h.percentile(0.5) == pytest.approx(bucket_end(1.0, 0.01))
    assert h.percentile(0.33) == pytest.approx(bucket_end(0.5, 0.01))  # 0.33 * 3 < 1
    flat = DecayingHistogram(CPU_OPTIONS)  # without decay, weights 1 and 1: p50 stays in the 0.5 bucket
    flat.add([0.5, 1.0], 1.0, [T0, T0 + DAY])
    assert flat.percentile(0.5) == pytest.approx(bucket_end(0.5, 0.01))
    # moving the reference time far ahead keeps the ratios
    far = DecayingHistogram(CPU_OPTIONS, half_life_s=3600)
    far.add([0.5, 1.0], 1.0, [T0, T0 + 3600])
    far.add(1.0, 1.0, T0 + 200 * 3600)
    assert far.percentile(0.1) == pytest.approx(bucket_end(1.0, 0.01))


def test_vpa_constant_memory_two_days():
    ts = minutes(2)
    s = make_series("w", "c", "memory", ts, np.full(ts.size, GIB))
    r = VpaRecommender().recommend(s)
    c = min((ts[-1] - ts[0]) / DAY, ts.size / 1440)  # VPA confidence
    end = bucket_end(GIB, 1e7)
    assert r.target == pytest.approx(end * 1.15)
    assert r.upper == pytest.approx(end * 1.15 * (1 + 1 / c))
    assert r.lower == pytest.approx(end * 1.15 * (1 + 0.001 / c) ** -2)
    assert r.evidence.samples == ts.size and r.evidence.percentile == 0.9
    assert r.confidence == pytest.approx(c / (1 + c))


def test_vpa_memory_uses_daily_peaks_with_decay():
    # day 1 peaks at 1 GiB, day 2 at 2 GiB: two peaks weighted 1 and 2 -> p90 and p50 in the 2 GiB bucket
    ts = minutes(2)
    vs = np.where(ts < T0 + DAY, 0.5 * GIB, 1.5 * GIB)
    vs[100] = GIB
    vs[2000] = 2 * GIB
    ends, peaks = memory_peaks(ts, vs, DAY)
    assert list(peaks) == [GIB, 2 * GIB] and list(ends) == [T0 + DAY, T0 + 2 * DAY]
    r = VpaRecommender().recommend(make_series("w", "c", "memory", ts, vs))
    assert r.target == pytest.approx(bucket_end(2 * GIB, 1e7) * 1.15)
    # only the last interval kept -> same; with 3 equal-weight peaks 1,1,2 GiB p50 falls to 1 GiB
    r1 = VpaRecommender(memory_intervals=1).recommend(make_series("w", "c", "memory", ts, vs))
    assert r1.target == pytest.approx(bucket_end(2 * GIB, 1e7) * 1.15)


def test_vpa_oom_bump():
    ts = minutes(1)
    s = make_series("w", "c", "memory", ts, np.full(ts.size, 500 * MIB), request=600 * MIB, oom_kills=[T0 + 3600])
    r = VpaRecommender().recommend(s)
    # used = max(request 600 MiB, peak so far 500 MiB); needed = max(600 + 100 MiB, 600 * 1.2) = 720 MiB
    assert r.target == pytest.approx(bucket_end(720 * MIB, 1e7) * 1.15)
    small = make_series("w", "c", "memory", ts, np.full(ts.size, 300 * MIB), oom_kills=[T0 + 3600])
    # used 300 MiB: max(300 + 100, 360) = 400 MiB (the +100 MiB floor wins)
    assert VpaRecommender().recommend(small).target == pytest.approx(bucket_end(400 * MIB, 1e7) * 1.15)


def test_vpa_cpu_weight_and_minimums():
    ts = minutes(1)
    s = make_series("w", "c", "cpu", ts, np.full(ts.size, 0.5), request=0.2)
    assert VpaRecommender().recommend(s).target == pytest.approx(bucket_end(0.5, 0.01) * 1.15)
    tiny_cpu = make_series("w", "c", "cpu", ts, np.full(ts.size, 0.001))
    assert VpaRecommender().recommend(tiny_cpu).target == pytest.approx(0.025)
    tiny_mem = make_series("w", "c", "memory", ts, np.full(ts.size, 1e6))
    assert VpaRecommender().recommend(tiny_mem).target == pytest.approx(250 * MIB)
    assert VpaRecommender(containers_in_pod=2).recommend(tiny_mem).target == pytest.approx(125 * MIB)


def test_vpa_confidence_scales_bounds():
    ts = minutes(0.5)  # 12 h of minute samples: c = min(0.4993, 0.5)
    r = VpaRecommender().recommend(make_series("w", "c", "cpu", ts, np.full(ts.size, 1.0)))
    c = (ts[-1] - ts[0]) / DAY
    assert r.upper == pytest.approx(bucket_end(1.0, 0.01) * 1.15 * (1 + 1 / c))
    assert r.upper / r.target == pytest.approx(1 + 1 / c)  # about x3 at 12 h
    single = VpaRecommender().recommend(make_series("w", "c", "cpu", [T0], [1.0]))
    assert single.confidence == 0.0 and single.upper == CPU_OPTIONS.max_value
    assert single.lower == 0.025  # lower bound x (1 + 0.001/0)^-2 = 0, raised to the minimum


def test_krr_simple():
    ts = minutes(0.25)  # 6 h, 360 points
    vs = np.linspace(0.1, 1.0, ts.size)
    cpu = KrrRecommender().recommend(make_series("w", "c", "cpu", ts, vs))
    assert cpu.target == pytest.approx(np.percentile(vs, 95)) and cpu.evidence.percentile == 0.95
    mem = KrrRecommender().recommend(make_series("w", "c", "memory", ts, vs * GIB))
    assert mem.target == pytest.approx(1.0 * GIB * 1.15)
    oom = make_series("w", "c", "memory", ts, vs * GIB, limit=2 * GIB, oom_kills=[ts[10]])
    assert KrrRecommender().recommend(oom).target == pytest.approx(2 * GIB * 1.25)
    assert KrrRecommender().recommend(make_series("w", "c", "cpu", ts, np.full(ts.size, 0.001))).target == 0.010
    with pytest.raises(NotEnoughData, match="needs 100 points and 3 h"):
        KrrRecommender().recommend(make_series("w", "c", "cpu", ts[:99], vs[:99]))
    with pytest.raises(NotEnoughData, match="3 h"):
        KrrRecommender().recommend(make_series("w", "c", "cpu", T0 + np.arange(150), np.ones(150)))


def test_effopt_constant_and_margin_prior():
    ts = minutes(2)
    r = EffoptRecommender().recommend(make_series("w", "c", "memory", ts, np.full(ts.size, GIB)))
    # 48 hourly peaks, 45 replayed rises of exactly 1.0 after the two start-up ones: learned margin 0, blended
    # with the 15% prior weighted 5 intervals: 0.75 / 50 = 0.015 -> floor of 2%
    assert r.target == pytest.approx(GIB * 1.02)
    assert r.lower == pytest.approx(GIB)
    assert "learned 0.000 from 45 interval(s) after 2 start-up interval(s)" in " ".join(r.evidence.notes)


def test_effopt_follows_a_drop_gradually_and_bumps_after_overrun():
    ts = minutes(1)
    vs = np.where(ts < T0 + 12 * 3600, 2 * GIB, GIB)
    s = make_series("w", "c", "memory", ts, vs)
    # the default decayed p95 holds a 12-hour plateau for about 12 hours more (past this day); a p90 level lets
    # the hysteresis be seen within the day
    rec = EffoptRecommender(level_percentile=0.9)
    first = rec.recommend(s.before(T0 + 13 * 3600))
    assert first.target >= 2 * GIB  # right after the drop: still covers the old level
    assert EffoptRecommender().recommend(s.before(T0 + 23 * 3600)).target >= 2 * GIB
    prev, recs = first, {}
    for h in range(14, 24):
        prev = recs[h] = rec.recommend(s.before(T0 + h * 3600), prev)
    targets = [r.target for r in recs.values()]
    assert all(b <= a for a, b in zip(targets, targets[1:], strict=False))  # comes down, never jumps
    assert all(b >= a * 0.9 - 1 for a, b in zip(targets, targets[1:], strict=False))  # at most -10% per step
    assert targets[-1] < 2 * GIB
    # usage above the previous target: bump to >= max(peak + 100 MiB, peak * 1.2)
    over = make_series("w", "c", "memory", ts, np.where(ts > T0 + 20 * 3600, 3 * GIB, vs))
    bumped = rec.recommend(over.before(T0 + 22 * 3600), recs[20])
    assert bumped.target >= 3 * GIB * 1.2
    assert any("overran" in n for n in bumped.evidence.notes)


def test_effopt_seasonality_needs_a_full_cycle():
    # a 2-hour daily peak at 09:00-11:00 (4 GiB, else 1 GiB); at 08:30 on day 3 the coming peak is provisioned
    ts = minutes(2 + 8.5 / 24)
    hour = ((ts - T0) % DAY) / 3600
    vs = np.where((hour >= 9) & (hour < 11), 4 * GIB, GIB)
    r = EffoptRecommender().recommend(make_series("w", "c", "memory", ts, vs))
    assert r.target >= 4 * GIB and any("seasonal" in n for n in r.evidence.notes)
    short = ts < T0 + 20 * 3600  # less than one cycle: no seasonal term
    r1 = EffoptRecommender(half_life_s=3600).recommend(make_series("w", "c", "memory", ts[short], vs[short]))
    assert not any("seasonal" in n for n in r1.evidence.notes)


def test_effopt_trend_projects_steady_growth_into_the_level():
    # memory growing 5% an hour for a day: the level is the last hourly peak grown by one more hour
    ts = minutes(1)
    vs = GIB * 1.05 ** ((ts - T0) / 3600)
    r = EffoptRecommender().recommend(make_series("w", "c", "memory", ts, vs))
    assert "level includes a growth trend of 5.0% per interval" in r.evidence.notes
    assert r.lower == pytest.approx(vs[-1] * 1.05, rel=1e-3)
    # the trend explains every replayed rise once it is known (from the third hour), so nothing is left
    # for the learned margin
    assert any("learned 0.000" in n for n in r.evidence.notes), r.evidence.notes
    flat = EffoptRecommender(trend=False).recommend(make_series("w", "c", "memory", ts, vs))
    assert flat.lower == pytest.approx(vs[-1], rel=1e-3) and not any("trend" in n for n in flat.evidence.notes)
    # only growth is projected: the same series falling has no trend
    down = EffoptRecommender().recommend(make_series("w", "c", "memory", ts, vs[::-1].copy()))
    assert not any("trend" in n for n in down.evidence.notes)


def test_effopt_trend_ignores_a_single_burst_and_the_start_up():
    ts = minutes(0.5)
    hour = (ts - T0) // 3600
    # the last hour at 3x in a flat series: a burst, not a trend (the pairs that include it carry over a third
    # of the weight, so a weighted mean of the slopes would call it growth; their median does not)
    burst = np.where(hour == 11, 3 * GIB, GIB)
    r = EffoptRecommender().recommend(make_series("w", "c", "memory", ts, burst))
    assert not any("trend" in n for n in r.evidence.notes), r.evidence.notes
    # a start-up hour at 40% of the steady level: the burn-in keeps it out of the trend and of the
    # container's own margin (counted, its 2.5x rise would be the margin)
    start = np.where(hour == 0, 0.4 * GIB, GIB)
    r = EffoptRecommender().recommend(make_series("w", "c", "memory", ts, start))
    assert not any("trend" in n for n in r.evidence.notes)
    assert any("learned 0.000 from 9 interval(s) after 2 start-up" in n for n in r.evidence.notes), r.evidence.notes
    assert r.target < 1.1 * GIB
    counted = EffoptRecommender(burn_in_intervals=0).recommend(make_series("w", "c", "memory", ts, start))
    assert counted.target > 2 * GIB, counted.evidence.notes


MONDAY = 1_793_577_600.0  # 2026-11-02 00:00 UTC, a Monday


def business_hours(ts: np.ndarray) -> np.ndarray:
    """8 GiB Monday to Friday 09:00-17:00 UTC, 2 GiB nights and weekends."""
    weekday = ((ts - MONDAY) // DAY) % 7
    hour = ((ts - MONDAY) % DAY) / 3600
    return np.where((weekday < 5) & (hour >= 9) & (hour < 17), 8 * GIB, 2 * GIB)


def test_effopt_weekly_season_keeps_a_quiet_weekend_low():
    # Saturday 10:00 of the third week: 10:00 was 8 GiB on every weekday but 2 GiB on both earlier Saturdays
    ts = minutes(19 + 10 / 24, start=MONDAY)
    series = make_series("w", "c", "memory", ts, business_hours(ts))
    weekly = EffoptRecommender().recommend(series)
    assert 2 * GIB <= weekly.target < 2.5 * GIB, weekly.evidence.notes
    assert not any("seasonal" in n for n in weekly.evidence.notes)
    # with the weekly profile off, the daily one holds the weekend at the weekdays' 10:00 peak
    daily = EffoptRecommender(weekly_min_cycles=math.inf).recommend(series)
    assert daily.target >= 8 * GIB
    assert any("same hour of the day" in n for n in daily.evidence.notes), daily.evidence.notes
    # under two weeks of history the weekly profile is not trusted yet: the daily one applies
    short = ts >= ts[-1] - 13 * DAY
    early = EffoptRecommender().recommend(make_series("w", "c", "memory", ts[short], business_hours(ts[short])))
    assert early.target >= 8 * GIB and any("same hour of the day" in n for n in early.evidence.notes)


def test_effopt_weekly_season_provisions_monday_morning_and_is_not_a_surprise():
    # Monday 09:00 of the third week: the weekend level is 2 GiB, 09:00-10:00 was 8 GiB on earlier Mondays
    ts = minutes(14 + 9 / 24, start=MONDAY)
    r = EffoptRecommender().recommend(make_series("w", "c", "memory", ts, business_hours(ts)))
    assert any(f"seasonal peak {8 * GIB:g} of the same hour of the week" in n for n in r.evidence.notes), r
    assert 8 * GIB <= r.target < 8.5 * GIB and r.lower == pytest.approx(8 * GIB), r.evidence.notes
    # At 12:00 the 4x rise of 09:00 is three hours old: the season had predicted it, so it is not a
    # surprise and does not inflate the learned margin (counted as one, the margin would be about 300%).
    ts = minutes(14 + 12 / 24, start=MONDAY)
    noon = EffoptRecommender().recommend(make_series("w", "c", "memory", ts, business_hours(ts)))
    assert 8 * GIB <= noon.target < 8.5 * GIB, noon.evidence.notes


def test_gpu_fit_names_slices():
    assert gpu_fit(4 * GIB).smallest_slice.resource == "nvidia.com/mig-1g.5gb"
    fit = gpu_fit(10.2 * GIB)
    assert fit.smallest_slice.name == "A100 80GB MIG 2g.20gb"
    assert fit.smallest_gpu.name == "T4 16GB"
    assert gpu_fit(200 * GIB).smallest_gpu is None
    ts = minutes(1)
    r = get_recommender("effopt").recommend(make_series("w", "c", "gpu_memory", ts, np.full(ts.size, 30 * GIB)))
    # 7g.40gb would be all of an A100 40GB: the slice is half an A100 80GB, the whole card an A100 40GB.
    assert r.gpu is not None and r.gpu.smallest_slice.name == "A100 80GB MIG 3g.40gb"
    assert r.as_dict()["gpu"]["smallest_gpu"]["name"] == "A100 40GB"
    assert all(not gpu_fit(g * GIB).smallest_slice.resource.endswith(("7g.40gb", "7g.80gb"))
               for g in (20, 39.3, 41) if gpu_fit(g * GIB).smallest_slice is not None)
    assert gpu_fit(45 * GIB).smallest_slice is None  # only 7g.80gb holds 45 GiB: that is the whole card


def test_unknown_recommender_and_setting_are_named():
    with pytest.raises(ValueError, match="unknown recommender 'nope'; known: effopt, krr, vpa"):
        get_recommender("nope")
    with pytest.raises(ValueError, match="no setting.* margin_x"):
        get_recommender("vpa", margin_x=1)


@pytest.mark.parametrize("block_elements", [1 << 20, 64])
def test_effopt_vectorised_replay_matches_the_interval_by_interval_rule(monkeypatch, block_elements):
    """The replay computes every interval's level at once; it must give the numbers of the documented rule
    (decayed percentile of each prefix x exp(Theil-Sen growth known then)), computed interval by interval,
    on gaps, ties, zeros, daily profiles and burn-ins, and whatever the block size of the rows."""
    from effopt.rightsizing import effopt as mod

    monkeypatch.setattr(mod, "_BLOCK_ELEMENTS", block_elements)
    rng = np.random.default_rng(7)
    seasonal_rows = trended_rows = 0
    for trial in range(120):
        n = int(rng.integers(1, 90))
        starts = 1.7e9 + 3600.0 * np.cumsum(rng.choice([1, 1, 1, 2, 5], size=n))
        stats = rng.lognormal(0, 0.5, n) if trial % 3 else np.round(rng.lognormal(0, 0.3, n), 1)
        if trial % 5 == 0:
            stats[rng.integers(0, n, size=max(1, n // 8))] = 0.0
        r = mod.EffoptRecommender(burn_in_intervals=int(rng.integers(0, 3)), weekly_min_cycles=math.inf,
                                  season_min_cycles=1.0 if trial % 2 else math.inf,
                                  season_s=3600.0 * float(rng.choice([6, 24])))
        envelopes, _ = r._envelopes(starts, stats)
        s = r.settings
        expected = np.array([
            mod._weighted_quantile(stats[:k + 1], 2.0 ** ((starts[:k + 1] - starts[k]) / s.half_life_s),
                                   s.level_percentile) * np.exp(r._growth(starts, stats, envelopes, k))
            for k in range(n)])
        np.testing.assert_array_equal(r._levels(starts, stats, envelopes), expected)  # the very same numbers
        seasonal_rows += int(np.isfinite(envelopes[:n]).sum())
        trended_rows += int(sum(r._growth(starts, stats, envelopes, k) > 0 for k in range(n)))
    assert seasonal_rows > 100 and trended_rows > 100  # both paths of the trend were exercised
