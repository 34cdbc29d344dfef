"""Rate table derivation from EC2 catalog snapshots, loading, and missing-price reporting."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from effopt.cli import main as cli_main
from effopt.prices import PriceError, build_rate_table, load_rate_table, parse_rate_table
from tests.rightsizing.apply.conftest import GIB, RATES

REPO = Path(__file__).resolve().parents[1]
SHARED_PRICES = REPO.parent / "shared" / "data" / "aws-prices"
COLUMNS = ["InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "GpuInfo", "Price",
           "SpotPrice", "Region", "AvailabilityZone"]
CPU, MEM = 0.04, 0.005  # the rates the synthetic catalog is priced with


def _write_catalog(path: Path, rows: list[tuple]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for itype, gpu, count, vcpu, mem, price, spots, region in rows:
            for zone, spot in enumerate(spots or [""]):
                w.writerow([itype, gpu, count, vcpu, mem, "", price, spot, region, f"z{zone}"])


def _synthetic(tmp_path: Path) -> Path:
    def od(v: float, m: float, gpu: float = 0.0) -> float:
        return round(v * CPU + m * MEM + gpu, 6)

    rows = [
        # CPU-only families with three GiB/vCPU ratios; spot = 0.4x and 0.6x of on-demand (median 0.5x)
        ("m5.large", "", "", 2, 8, od(2, 8), [od(2, 8) * 0.4, od(2, 8) * 0.6], "us-east-1"),
        ("m5.xlarge", "", "", 4, 16, od(4, 16), [od(4, 16) * 0.4, od(4, 16) * 0.6], "us-east-1"),
        ("c5.large", "", "", 2, 4, od(2, 4), [od(2, 4) * 0.4, od(2, 4) * 0.6], "us-east-1"),
        ("r5.large", "", "", 2, 16, od(2, 16), [od(2, 16) * 0.4, od(2, 16) * 0.6], "us-east-1"),
        # burstable and other-region rows, priced far off, must not move the fit
        ("t3.large", "", "", 2, 8, 9.99, [], "us-east-1"),
        ("m5.large", "", "", 2, 8, 7.77, [], "eu-west-1"),
        # GPU instances: 1.0 and 1.2 USD per GPU-hour on top of CPU and memory -> median 1.1
        ("g5.xlarge", "A10G", 1, 4, 16, od(4, 16, 1.0), [od(4, 16, 1.0) * 0.5], "us-east-1"),
        ("g5.12xlarge", "A10G", 4, 48, 192, od(48, 192, 4.8), [od(48, 192, 4.8) * 0.5], "us-east-1"),
    ]
    path = tmp_path / "catalog.csv"
    _write_catalog(path, rows)
    return path


def test_derivation_recovers_known_rates(tmp_path):
    catalog = _synthetic(tmp_path)
    table = build_rate_table(tmp_path, snapshot=catalog.name, region="us-east-1")
    od, spot = table["rates"]["on_demand"], table["rates"]["spot"]
    assert od["cpu_per_vcpu_hour"] == pytest.approx(CPU, abs=1e-6)
    assert od["memory_per_gib_hour"] == pytest.approx(MEM, abs=1e-6)
    assert od["gpu_per_hour"] == {"A10G": pytest.approx(1.1, abs=1e-6)}
    assert spot["cpu_per_vcpu_hour"] == pytest.approx(CPU * 0.5, abs=1e-6)
    assert spot["memory_per_gib_hour"] == pytest.approx(MEM * 0.5, abs=1e-6)
    assert spot["gpu_per_hour"]["A10G"] == pytest.approx(1.1 * 0.5, abs=1e-6)
    assert table["fit"]["on_demand"]["cpu_memory"]["instance_types"] == 4  # t3 and eu-west-1 left out
    assert table["source"]["file"] == "catalog.csv" and table["source"]["region"] == "us-east-1"
    assert len(table["source"]["sha256"]) == 64 and "least-squares" in table["method"]


def test_derivation_needs_different_memory_ratios(tmp_path):
    catalog = _synthetic(tmp_path)
    with pytest.raises(PriceError, match="same GiB per vCPU"):
        build_rate_table(tmp_path, snapshot=catalog.name, cpu_families=["m5"])
    with pytest.raises(PriceError, match="no rows for region 'ap-south-1'"):
        build_rate_table(tmp_path, snapshot=catalog.name, region="ap-south-1")
    (tmp_path / "bad.csv").write_text("InstanceType,Price\nm5.large,1\n")
    with pytest.raises(PriceError, match="missing column"):
        build_rate_table(tmp_path, snapshot="bad.csv")


@pytest.mark.skipif(not SHARED_PRICES.is_dir(), reason=f"{SHARED_PRICES} (the AWS price snapshots) is not here")
def test_bundled_table_is_reproducible_from_the_snapshot(tmp_path, capsys):
    out = tmp_path / "rate_table.json"
    assert cli_main(["prices", "build", "--source", str(SHARED_PRICES), "--out", str(out)]) == 0
    bundled = REPO / "plugins" / "effopt" / "data" / "rate_table.json"
    assert json.loads(out.read_text()) == json.loads(bundled.read_text())
    table = load_rate_table(out)
    od = table.rates["on_demand"]
    # the fit reprices a real instance type closely: m5.large (2 vCPU, 8 GiB) is 0.096 USD/h on demand in us-east-1
    assert 2 * od.cpu_per_vcpu_hour + 8 * od.memory_per_gib_hour == pytest.approx(0.096, rel=0.05)
    assert set(od.gpu_per_hour) == {"T4", "A10G", "L4", "V100", "A100", "H100"}
    for model, rate in od.gpu_per_hour.items():
        assert 0 < table.rates["spot"].gpu_per_hour[model] < rate
    assert cli_main(["prices", "show", "--table", str(out)]) == 0
    assert "GPU-hour H100" in capsys.readouterr().out


def test_bundled_table_loads_by_default():
    table = load_rate_table()
    assert table.path.endswith("effopt/data/rate_table.json")  # in the package, wherever it is installed
    assert table.source["region"] == "us-east-1" and table.rates["on_demand"].cpu_per_vcpu_hour > 0


def test_monthly_cost_and_missing_prices():
    table = parse_rate_table(RATES, "test-rates")
    cost = table.monthly_cost(2, 4 * GIB, {"A10G": 1})
    assert cost.usd == pytest.approx((2 * 0.04 + 4 * 0.005 + 1.0) * 730)
    unknown = table.monthly_cost(1, GIB, {"H100": 2})
    assert unknown.usd is None and not unknown.complete
    assert "GPU model 'H100'" in unknown.missing[0] and "A10G" in unknown.missing[0]
    no_model = table.monthly_cost(1, GIB, {None: 1})
    assert no_model.usd is None and "unknown model" in no_model.missing[0]
    spot = table.monthly_cost(1, GIB, pricing="spot")
    assert spot.usd is None and "'spot'" in spot.missing[0]
    with pytest.raises(ValueError, match="negative"):
        table.monthly_cost(-1, 0)


def test_invalid_tables_name_the_key(tmp_path):
    bad = json.loads(json.dumps(RATES))
    bad["rates"]["on_demand"]["gpu_per_hour"]["T4"] = 0
    with pytest.raises(PriceError, match=r"rates.on_demand.gpu_per_hour.T4 = 0"):
        parse_rate_table(bad)
    no_source = {k: v for k, v in RATES.items() if k != "source"}
    with pytest.raises(PriceError, match="'source' is missing"):
        parse_rate_table(no_source)
    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(PriceError, match="not valid JSON"):
        load_rate_table(tmp_path / "t.json")


def test_rate_table_option_selects_the_table(tmp_path, monkeypatch, capsys):
    from effopt.airflow_settings import get_settings
    from effopt.config import Settings

    assert Settings.from_mapping({}, "/home").rate_table == ""
    custom = tmp_path / "rates.json"
    custom.write_text(json.dumps(RATES))
    monkeypatch.setenv("AIRFLOW__EFFOPT__RATE_TABLE", str(custom))
    get_settings.cache_clear()
    try:
        assert cli_main(["prices", "show", "--json"]) == 0
    finally:
        get_settings.cache_clear()
    shown = json.loads(capsys.readouterr().out)
    assert shown["path"] == str(custom)
    assert shown["rates"]["on_demand"]["gpu_per_hour"] == {"A10G": 1.0}
