"""Each detector on clear positive and negative cases, GC sawtooth, short series, NaN gaps and flat zeros."""

from __future__ import annotations

import math

import numpy as np
import pytest

from effopt.cache.report import summarize
from effopt.metrics import make_series
from effopt.rightsizing import get_recommender
from effopt.waste import (
    ReplicaSeries,
    cache_inefficiency,
    cost_anomaly,
    idle,
    idle_gpu,
    mann_kendall,
    memory_leak,
    over_provisioned,
    scaling_churn,
    theil_sen,
    troughs,
)
from tests.waste.conftest import GIB, MIB, T0, times


def rng() -> np.random.Generator:
    return np.random.default_rng(7)


# -- statistics -----------------------------------------------------------------------------------------------
def test_theil_sen_ignores_outliers_and_mann_kendall_sees_trends():
    t = np.arange(50.0)
    y = 2.0 * t + 1.0
    y[[5, 30]] = 1000.0
    slope, intercept = theil_sen(t, y)
    assert slope == pytest.approx(2.0) and intercept == pytest.approx(1.0)
    assert mann_kendall(np.arange(30.0))[2] < 1e-6
    assert mann_kendall(np.zeros(30))[2] == 1.0  # all ties: no trend
    assert mann_kendall(-np.arange(30.0))[2] > 0.99
    with pytest.raises(ValueError, match="at least 3"):
        mann_kendall(np.array([1.0, 2.0]))


# -- over-provisioning ----------------------------------------------------------------------------------------
def test_over_provisioned_cpu_uses_the_recommender_and_prices_the_gap(rates):
    t = times(24)
    s = make_series("ns/api", "app", "cpu", t, 0.2 + 0.02 * rng().standard_normal(t.size), request=2.0)
    [f] = over_provisioned(s, rates)
    target = get_recommender("krr").recommend(s).target
    assert f.kind == "over_provisioned" and f.severity == "critical" and f.resource == "cpu"
    assert f.advice.values["request"] == pytest.approx(target, abs=1e-6)
    assert f.advice.source == "krr recommender"
    assert f.evidence["gap"] == pytest.approx(2.0 - target, abs=1e-6)
    assert f.monthly_waste == pytest.approx((2.0 - target) * 0.04 * 100)


def test_over_provisioned_severity_is_by_absolute_gap_like_krr(rates):
    t = times(24)
    tiny = make_series("w", "c", "cpu", t, np.full(t.size, 0.01), request=0.2)  # 20x ratio, 0.19 core gap
    assert over_provisioned(tiny, rates) == []
    ok = make_series("w", "c", "cpu", t, np.full(t.size, 0.9), request=1.0)
    assert over_provisioned(ok, rates) == []
    warn = make_series("w", "c", "memory", t, np.full(t.size, 1000 * MIB), request=1500 * MIB, limit=1500 * MIB)
    [f] = over_provisioned(warn, rates)  # krr: 1000 MiB x 1.15 = 1150 MiB -> gap 350 MiB
    assert f.severity == "warning" and f.evidence["gap"] == pytest.approx(350 * MIB, rel=1e-6)
    assert f.advice.values["limit"] == pytest.approx(1150 * MIB, rel=1e-6)


def test_over_provisioned_short_series_and_flat_zero(rates):
    short = make_series("w", "c", "cpu", times(1)[:5], [0.1] * 5, request=4.0)
    assert over_provisioned(short, rates) == []  # krr needs 100 points and 3 h
    t = times(24)
    zero = make_series("w", "c", "memory", t, np.zeros(t.size), request=2 * GIB, limit=2 * GIB)
    [f] = over_provisioned(zero, rates)
    assert f.severity == "critical" and f.advice.values["request"] == pytest.approx(100 * MIB)  # krr's minimum
    assert over_provisioned(make_series("w", "c", "cpu", t, np.zeros(t.size)), rates) == []  # no request known


# -- idle -----------------------------------------------------------------------------------------------------
def _office_hours(t: np.ndarray) -> np.ndarray:
    hour = (t - T0) / 3600 % 24
    return np.where((hour >= 9) & (hour < 17), 0.8, 0.001)


def test_idle_periods_give_the_idle_share_and_cost(rates):
    t = times(72)
    s = make_series("w", "c", "cpu", t, _office_hours(t), request=1.0)
    [f] = idle(s, rates)
    assert f.evidence["idle_share"] == pytest.approx(2 / 3, abs=0.01)
    assert f.severity == "warning" and not f.evidence["scale_to_zero_candidate"]
    assert f.monthly_waste == pytest.approx(2 / 3 * 1.0 * 0.04 * 100, rel=1e-3)
    busy = make_series("w", "c", "cpu", t, 0.5 + 0.05 * rng().standard_normal(t.size), request=1.0)
    assert idle(busy, rates) == []


def test_idle_ignores_short_quiet_spells_and_flags_flat_zero_for_scale_to_zero(rates):
    t = times(24)
    v = np.full(t.size, 0.5)
    v[::10] = 0.0  # 5-minute dips only
    assert idle(make_series("w", "c", "cpu", t, v, request=1.0), rates) == []
    [f] = idle(make_series("w", "c", "cpu", t, np.zeros(t.size), request=1.0), rates)
    assert f.severity == "critical" and f.evidence["scale_to_zero_candidate"] and f.advice.values["scale_to_zero"]
    assert idle(make_series("w", "c", "cpu", t[:3], [0.0] * 3, request=1.0), rates) == []  # short


def test_idle_with_nan_gaps_splits_runs_at_the_gap(rates):
    t = times(48)
    v = _office_hours(t)
    v[100:400] = np.nan  # 25 h of missing data
    s = make_series("w", "c", "cpu", t, v, request=1.0)
    assert s.quality.nan == 300
    [f] = idle(s, rates)
    assert f.evidence["idle_hours"] < 24  # the missing day is not counted as idle


# -- idle GPUs ------------------------------------------------------------------------------------------------
def test_idle_gpu_holding_memory_gets_a_sized_gpu_from_the_recommender(rates):
    t = times(24, 60)
    util = np.where(np.arange(t.size) % 50 == 0, 80.0, 0.5)
    mem = np.full(t.size, 10 * GIB)
    u = make_series("w", "c", "gpu_util", t, util)
    m = make_series("w", "c", "gpu_memory", t, mem)
    [f] = idle_gpu(u, rates, memory=m, gpu_model="A10G", gpu_count=2)
    assert f.kind == "idle_gpu" and f.severity == "critical"
    assert f.evidence["memory_held_while_idle"] and f.evidence["memory_held_while_idle_bytes"] == 10 * GIB
    rec = get_recommender("krr").recommend(m)
    assert f.advice.values["gpu_memory_bytes"] == pytest.approx(rec.target, abs=1)
    assert rec.gpu is not None and rec.gpu.smallest_slice is not None
    assert f.advice.values["gpu"] == rec.gpu.smallest_slice.name  # 11.5 GiB: a 19.5 GiB MIG slice
    mean_duty = float(util.mean())
    assert f.monthly_waste == pytest.approx(2 * (1 - mean_duty / 100) * 1.0 * 100)
    assert f.evidence["idle_gpu_hours"] == pytest.approx(0.98 * 2 * 24, rel=0.01)


def test_idle_gpu_negative_short_and_unpriced(rates):
    t = times(24, 60)
    busy = make_series("w", "c", "gpu_util", t, 60 + 10 * np.sin(np.arange(t.size)))
    assert idle_gpu(busy, rates, gpu_model="A10G") == []
    assert idle_gpu(make_series("w", "c", "gpu_util", t[:5], [0.0] * 5), rates, gpu_model="A10G") == []
    [f] = idle_gpu(make_series("w", "c", "gpu_util", t, np.zeros(t.size)), rates, gpu_model="B200")
    assert f.monthly_waste is None and "B200" in f.missing[0]


# -- scaling churn --------------------------------------------------------------------------------------------
def test_scaling_churn_counts_direction_changes_per_day():
    t = times(48, 600)
    reps = np.where((np.arange(t.size) // 3) % 2 == 0, 2.0, 4.0)  # flips every 30 min
    [f] = scaling_churn(ReplicaSeries("ns/web", t, reps), replica_hourly_usd=0.5, startup_s=60, hours_per_month=100)
    days = (t[-1] - t[0]) / 86400
    changes = int(np.count_nonzero(np.diff(reps))) - 1
    assert f.evidence["direction_changes"] == changes
    assert f.evidence["changes_per_day"] == pytest.approx(changes / days, rel=1e-3)
    assert f.severity == "critical"
    started = float(np.clip(np.diff(reps), 0, None).sum()) / days
    assert f.monthly_waste == pytest.approx(started * (100 / 24) * (60 / 3600) * 0.5)
    assert f.advice.values["scale_down_stabilization_window_s"] >= 300


def test_scaling_churn_negative_short_and_unpriced():
    t = times(72, 600)
    hour = (t - T0) / 3600 % 24
    daily = np.where((hour >= 8) & (hour < 18), 6.0, 2.0)
    assert scaling_churn(ReplicaSeries("w", t, daily), replica_hourly_usd=1.0) == []
    assert scaling_churn(ReplicaSeries("w", t[:2], np.array([1.0, 3.0]))) == []
    flat = np.zeros(t.size)
    assert scaling_churn(ReplicaSeries("w", t, flat)) == []
    reps = np.where(np.arange(t.size) % 2 == 0, 1.0, 3.0)
    [f] = scaling_churn(ReplicaSeries("ns/w", t, reps))
    assert f.monthly_waste is None and "ns/w" in f.missing[0]


# -- memory leaks ---------------------------------------------------------------------------------------------
def _leak(t: np.ndarray, per_hour: float, noise: float = 0.02 * GIB) -> np.ndarray:
    return GIB + per_hour * (t - t[0]) / 3600 + noise * rng().standard_normal(t.size)


def test_memory_leak_linear_growth_with_noise(rates):
    t = times(48)
    s = make_series("w", "c", "memory", t, _leak(t, 20 * MIB), request=4 * GIB, limit=4 * GIB)
    [f] = memory_leak(s, rates)
    assert f.evidence["growth_per_hour"] == pytest.approx(20 * MIB, rel=0.1)
    expected_h = (4 * GIB - (GIB + 20 * MIB * 48)) / (20 * MIB)
    assert f.evidence["hours_to_limit"] == pytest.approx(expected_h, rel=0.15)
    assert f.evidence["p_value"] < 0.01
    assert f.evidence["method"] == "1 h minima"  # noise is not taken for GC cycles
    assert f.monthly_waste == pytest.approx(f.evidence["grown"] / GIB * 0.005 * 100, rel=1e-6)


@pytest.mark.parametrize(("period_s", "hours"), [(900.0, 72), (3600.0, 72), (3 * 3600.0, 72), (7 * 3600.0, 72),
                                                (12 * 3600.0, 60), (20 * 3600.0, 44)])
def test_gc_sawtooth_is_not_a_leak(rates, period_s, hours):
    t = times(hours)
    saw = GIB + 0.8 * GIB * (((t - t[0]) % period_s) / period_s) + 0.01 * GIB * rng().standard_normal(t.size)
    s = make_series("w", "c", "memory", t, saw, request=3 * GIB, limit=3 * GIB)
    assert memory_leak(s, rates) == []


def test_leak_under_a_gc_sawtooth_is_found_on_the_cycle_troughs(rates):
    t = times(72)
    period = 2 * 3600.0
    saw = 0.8 * GIB * (((t - t[0]) % period) / period)
    s = make_series("w", "c", "memory", t, _leak(t, 15 * MIB, 0.005 * GIB) + saw, request=6 * GIB, limit=6 * GIB)
    [f] = memory_leak(s, rates)
    assert f.evidence["method"] == "per-cycle minima"
    assert f.evidence["growth_per_hour"] == pytest.approx(15 * MIB, rel=0.15)
    assert troughs(s)[2] == "per-cycle minima"


def test_memory_leak_negatives_flat_zero_short_and_nan_gaps(rates):
    t = times(48)
    steady = make_series("w", "c", "memory", t, GIB + 0.02 * GIB * rng().standard_normal(t.size))
    assert memory_leak(steady, rates) == []
    assert memory_leak(make_series("w", "c", "memory", t, np.zeros(t.size)), rates) == []
    assert memory_leak(make_series("w", "c", "memory", t[:20], _leak(t[:20], 100 * MIB)), rates) == []
    v = _leak(t, 20 * MIB)
    v[200:350] = np.nan
    [f] = memory_leak(make_series("w", "c", "memory", t, v), rates)
    assert f.evidence["hours_to_limit"] is None and f.severity == "warning"  # no limit known


# -- cache inefficiency ---------------------------------------------------------------------------------------
def _summary() -> dict:
    return summarize({"ns": {"good": {"hits": 90, "misses": 10, "saved_s": 90.0, "compute_s": 10.0},
                             "bad": {"hits": 10, "misses": 90, "saved_s": 20.0, "compute_s": 180.0}}})


def test_cache_inefficiency_low_hit_rate_and_time_to_save(rates):
    [f] = cache_inefficiency(_summary())
    assert (f.workload, f.container, f.kind) == ("ns", "bad", "cache_inefficiency")
    assert f.evidence["could_save_s"] == pytest.approx((0.8 - 0.1) * 100 * 2.0)
    assert f.monthly_waste is None and any("worker_cores" in m for m in f.missing)
    [priced] = cache_inefficiency(_summary(), rates=rates, period_s=3600.0, worker_cores=2.0)
    assert priced.monthly_waste == pytest.approx(140.0 / 3600 * 100 * 2 * 0.04)
    with pytest.raises(ValueError, match="functions"):
        cache_inefficiency({"totals": {}})


# -- cost anomalies -------------------------------------------------------------------------------------------
def _daily(n: int = 35) -> tuple[np.ndarray, np.ndarray]:
    days = T0 + np.arange(n) * 86400.0
    weekday = (np.arange(n) + 3) % 7
    return days, 100 * np.where(weekday >= 5, 0.6, 1.0) * (1 + 0.03 * rng().standard_normal(n))


def test_cost_anomaly_spike_against_the_seasonal_baseline():
    days, usd = _daily()
    assert cost_anomaly(days, usd) == []
    usd[25] *= 2.5
    [f] = cost_anomaly(days, usd, workload="ns/train")
    assert f.evidence["day"] == days[25] and f.workload == "ns/train"
    assert f.evidence["robust_z"] >= 3.5 and f.evidence["baseline_method"] == "same weekday"
    assert f.monthly_waste == pytest.approx(usd[25] - f.evidence["baseline"], rel=1e-3)


def test_cost_anomaly_flat_zero_short_and_flat_with_spike():
    days = T0 + np.arange(20) * 86400.0
    assert cost_anomaly(days, np.zeros(20)) == []
    assert cost_anomaly(days[:5], np.full(5, 10.0)) == []
    flat = np.full(20, 10.0)
    flat[15] = 30.0
    [f] = cost_anomaly(days, flat)
    assert f.evidence["excess_usd"] == pytest.approx(20.0) and f.severity == "critical"
    weekend = np.full(20, 10.0)
    weekend[12] = math.nan
    assert cost_anomaly(days, weekend) == []
    with pytest.raises(ValueError, match="3 costs for ns/x"):
        cost_anomaly(days[:4], np.ones(3), workload="ns/x")
