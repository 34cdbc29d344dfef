"""Cost model hand-computed totals, missing prices, the report's JSON, CSV and trend."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from effopt.metrics import make_series
from effopt.waste import KINDS, WasteSettings, WorkloadUsage, analyze, daily_costs, resource_cost, unit_price
from tests.waste.conftest import GIB, T0, times


def _series(resource: str, values: list[float], **kw):
    return make_series("ns/w", "c", resource, T0 + 60.0 * np.arange(len(values)), values, **kw)


def test_cost_is_max_of_request_and_usage_times_price(rates):
    c = resource_cost(_series("cpu", [0.5, 1.5, 0.5, 0.5], request=1.0), rates)
    # held 1, 1.5, 1, 1 -> 1.125 cores; used 0.75 cores; 0.04 USD/core-h x 100 h
    assert c.cost == pytest.approx(4.5) and c.usage_cost == pytest.approx(3.0) and c.waste == pytest.approx(1.5)
    m = resource_cost(_series("memory", [GIB] * 4, request=2 * GIB), rates)
    assert (m.cost, m.waste) == (pytest.approx(1.0), pytest.approx(0.5))
    g = resource_cost(_series("gpu_util", [25.0] * 4), rates, gpu_model="A10G", gpu_count=2)
    assert (g.cost, g.usage_cost, g.waste) == (pytest.approx(200.0), pytest.approx(50.0), pytest.approx(150.0))
    no_request = resource_cost(_series("cpu", [0.5, 1.5]), rates)
    assert no_request.waste == pytest.approx(0.0) and no_request.cost == pytest.approx(1.0 * 0.04 * 100)


def test_missing_price_is_reported_never_zero(rates):
    g = resource_cost(_series("gpu_util", [10.0] * 4), rates, gpu_model="H100")
    assert g.cost is None and g.waste is None and "'H100'" in g.missing[0] and "A10G" in g.missing[0]
    assert unit_price(rates, "gpu", "gpus").missing is not None
    assert "spot" in str(unit_price(rates, "cpu", "cores", pricing="spot").missing)
    with pytest.raises(ValueError, match="fraction"):
        unit_price(rates, "memory", "fraction")
    t = times(24, 60)
    w = WorkloadUsage("ns/gpu", "c", gpu_util=make_series("ns/gpu", "c", "gpu_util", t, np.zeros(t.size)),
                      gpu_model="H100")
    report = analyze([w], rates)
    data = report.to_json()
    assert data["totals"]["cost"] == 0.0 and data["totals"]["waste_pct"] is None
    assert data["totals"]["unpriced_findings_by_kind"] == {"idle_gpu": 1}
    assert data["findings"][0]["monthly_waste"] is None
    assert {m["resource"] for m in data["missing_prices"]} == {"gpu_util", "gpu"}
    assert all("H100" in m["missing"] for m in data["missing_prices"])


def test_daily_costs_charge_each_sample_until_the_next(rates):
    ts = T0 + np.array([0.0, 3600.0, 86400.0, 90000.0])
    s = make_series("w", "c", "cpu", ts, [1.0, 1.0, 2.0, 2.0], request=1.0)
    days, usd, missing = daily_costs(s, rates)
    # day 1: 1 core for 1 h + 1 core for 23 h; day 2: 2 cores for 1 h, then the last sample for the median interval
    step = s.quality.median_interval_s
    assert missing is None and list(days) == [T0, T0 + 86400.0]
    assert usd is not None
    assert usd[0] == pytest.approx(24 * 0.04)
    assert usd[1] == pytest.approx((2 * 1 + 2 * step / 3600) * 0.04)
    assert daily_costs(make_series("w", "c", "gpu_util", ts, [1.0] * 4), rates)[2] is not None


def _workloads() -> list[WorkloadUsage]:
    t = times(24)
    cpu = make_series("team-a/api", "app", "cpu", t, np.full(t.size, 0.5), request=2.0)
    mem = make_series("team-a/api", "app", "memory", t, np.full(t.size, GIB), request=GIB, limit=GIB)
    busy = make_series("team-b/etl", "app", "cpu", t, np.full(t.size, 1.0), request=1.0)
    return [WorkloadUsage("team-a/api", "app", cpu=cpu, memory=mem), WorkloadUsage("team-b/etl", "app", cpu=busy)]


def test_report_totals_by_kind_label_and_json_keys(rates):
    report = analyze(_workloads(), rates, settings=WasteSettings(top=5))
    data = json.loads(json.dumps(report.to_json()))
    t = data["totals"]
    # api: cpu held 2, used 0.5 -> 8.0 / 2.0; memory held = used 1 GiB -> 0.5 / 0.5; etl: cpu 1 core -> 4.0 / 4.0
    assert t["cost"] == pytest.approx(8.0 + 0.5 + 4.0) and t["waste"] == pytest.approx(6.0)
    assert t["waste_pct"] == pytest.approx(100 * 6.0 / 12.5, abs=1e-3)
    assert set(t["by_kind"]) == set(KINDS)
    [f] = data["findings"]
    assert {"kind", "workload", "container", "resource", "severity", "monthly_waste", "evidence"} <= set(f)
    assert f["kind"] == "over_provisioned" and t["by_kind"]["over_provisioned"] == pytest.approx(f["monthly_waste"])
    assert t["by_label"] == {"namespace=team-a": {"cost": 8.5, "waste": 6.0},
                             "namespace=team-b": {"cost": 4.0, "waste": 0.0}}
    # Only workloads with a finding are top wasters: etl has none (and no waste).
    assert [w["workload"] for w in data["top_wasters"]] == ["team-a/api"]
    assert data["trend"] is None
    # 24 h of 5-minute samples (the last one counts for its interval), scaled to the rate table's month.
    assert data["observed_s"] == pytest.approx(24 * 3600.0, rel=0.05)
    assert data["window"] == f"24 h observed, scaled to a month ({rates.hours_per_month:g} h)"
    assert "/" not in data["rate_table"].split(":")[0], data["rate_table"]  # a file name, never a local path


def test_csv_has_one_row_per_finding_and_trend_against_a_previous_report(rates):
    report = analyze(_workloads(), rates)
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert len(rows) == len(report.findings) == 1
    assert rows[0]["kind"] == "over_provisioned" and json.loads(rows[0]["recommended_values"])["request"] > 0
    assert float(rows[0]["monthly_waste"]) == pytest.approx(report.findings[0].monthly_waste, abs=1e-3)
    previous = report.to_json()
    previous["totals"] = {**previous["totals"], "waste": 3.0}
    previous["findings"] = previous["findings"] + [{"kind": "idle", "workload": "gone", "container": "c",
                                                    "resource": "cpu"}]
    trend = report.to_json(previous)["trend"]
    assert trend["waste"]["change"] == pytest.approx(3.0) and trend["waste"]["change_pct"] == pytest.approx(100.0)
    assert trend["resolved_findings"] == 1 and trend["new_findings"] == 0
    with pytest.raises(ValueError, match="totals"):
        report.trend({"findings": []})


def test_memory_as_a_fraction_must_be_converted_first(rates):
    t = times(6)
    frac = make_series("w", "pod-1", "memory", t, np.full(t.size, 0.5), unit="fraction", limit=1.0)
    with pytest.raises(ValueError, match="w/pod-1.*fraction"):
        analyze([WorkloadUsage("w", "pod-1", memory=frac)], rates)


def test_fleet_daily_costs_sum_priced_series_per_day():
    """Two containers of 1 core each, requested all day for two days: 2 x 24 core-hours a day at the CPU rate."""
    import numpy as np

    from effopt.metrics.series import make_series
    from effopt.prices import load_rate_table
    from effopt.waste.cost import fleet_daily_costs
    from effopt.waste.report import WorkloadUsage

    rates = load_rate_table()
    ts = np.arange(0, 2 * 86400, 300, dtype=float)
    ws = [WorkloadUsage(f"w{i}", "c", cpu=make_series(f"w{i}", "c", "cpu", ts, np.full(ts.size, 0.2), request=1.0))
          for i in range(2)]
    days, usd = fleet_daily_costs(ws, rates)
    assert days.tolist() == [0.0, 86400.0]
    expected = 2 * 24 * rates.rates_for("on_demand").cpu_per_vcpu_hour  # max(request 1, usage 0.2) = 1 core
    assert np.allclose(usd, [expected, expected])
