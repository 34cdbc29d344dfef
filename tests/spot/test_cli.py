"""``python -m effopt spot simulate|choose`` and ``prices build-catalog``: output keys, errors, exit codes."""

from __future__ import annotations

import json

import pytest

from effopt.cli import main
from tests.spot.conftest import write_trace


@pytest.fixture
def traces(tmp_path):
    base = [1] * 30 + [0] * 10 + [1, 1, 0, 0] * 20 + [1] * 40 + [0] * 25 + [1] * 30
    root = tmp_path / "traces"
    write_trace(root / "run" / "us-east-1a_v100_1.json", base * 3, gap_seconds=900)
    write_trace(root / "run" / "us-east-1c_v100_1.json", base[::-1] * 3, gap_seconds=900)
    write_trace(root / "run" / "us-west-2a_k80_1.json", base * 3, gap_seconds=900)
    return root


ARGS = ["--work-hours", "6", "--deadlines", "8", "--changeovers", "0.25", "--starts", "3"]


def test_simulate_json_has_the_named_keys(traces, capsys):
    assert main(["spot", "simulate", "--traces", str(traces), *ARGS, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"settings", "policies"}
    assert list(out["policies"]) == ["on-demand", "greedy", "uniform-progress", "effopt"]
    for p in out["policies"].values():
        assert {"cost_vs_on_demand", "deadline_misses", "jobs", "lost_work_h", "changeovers"} <= set(p)
        assert isinstance(p["deadline_misses"], int) and isinstance(p["jobs"], int)
    labels = [s["label"] for s in out["settings"]]
    assert len(labels) == 4  # v100: two zones alone + together; k80: one zone
    k80 = next(s for s in out["settings"] if "k80" in s["group"])
    assert k80["priced"] is False and k80["policies"]["greedy"]["cost_vs_on_demand"] is None
    assert "unpriced" in k80["prices"]["note"]
    v100 = next(s for s in out["settings"] if s["zones"] == ["us-east-1a"])
    assert v100["prices"]["instance_type"] == "p3.2xlarge" and v100["prices"]["on_demand"] == 3.06
    assert out["policies"]["on-demand"]["cost_vs_on_demand"] == 1.0
    assert out["policies"]["effopt"]["jobs"] == 12


def test_simulate_text_prices_the_k80_with_a_prices_file_and_plots(traces, tmp_path, capsys):
    prices = tmp_path / "p.json"
    prices.write_text(json.dumps({"k80_1": {"instance_type": "p2.xlarge", "on_demand": 0.9, "spot": 0.27}}))
    png = tmp_path / "plot.png"
    assert main(["spot", "simulate", "--traces", str(traces), *ARGS, "--prices", str(prices), "--plot", str(png),
                 "--policies", "greedy,uniform-progress"]) == 0
    out = capsys.readouterr().out
    assert "unpriced" not in out.split("prices used")[0]
    assert "p2.xlarge on-demand $0.9000/h, spot $0.2700/h (given by --prices for k80_1" in out
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("extra, text", [
    (["--deadlines", "5"], "--deadlines: 5 h is shorter than the work (6 h) plus one changeover"),
    (["--changeovers", "-0.1"], "--changeovers: -0.1 must not be negative"),
    (["--policies", "greedy,cheapest"], "--policies: unknown policy cheapest"),
    (["--zones", "us-east-9z"], "--zones: us-east-9z not in"),
])
def test_simulate_bad_options_exit_2_with_one_line(traces, capsys, extra, text):
    with pytest.raises(SystemExit) as e:
        main(["spot", "simulate", "--traces", str(traces), *ARGS, *extra])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and text in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("content, text", [
    ("[1, 2, 3]", "unknown layout"),
    ('{"metadata": {"gap_seconds": 600}, "data": []}', "data is empty"),
])
def test_simulate_bad_trace_file_exits_2_naming_the_file(tmp_path, capsys, content, text):
    bad = tmp_path / "us-east-1a_v100_1.json"
    bad.write_text(content)
    with pytest.raises(SystemExit) as e:
        main(["spot", "simulate", "--traces", str(tmp_path), *ARGS])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and str(bad) in err and text in err and len(err.splitlines()) == 1


def test_choose_prints_ranked_offerings_and_json(capsys):
    args = ["spot", "choose", "--vcpus", "8", "--memory-gib", "61", "--gpus", "1", "--gpu-model", "V100",
            "--hours", "48", "--deadline-hours", "60"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("decision: spot -> p3.2xlarge spot us-east-1/use1-az5")
    assert "ranked offerings" in out and "USD/useful h" in out
    assert main([*args, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["capacity"] == "spot" and d["fallback"]["capacity"] == "on-demand" and d["ranked"]


@pytest.mark.parametrize("extra, text", [
    (["--instance-type", "p9.huge"], "unknown instance type 'p9.huge'"),
    (["--deadline-hours", "3"], "--deadline-hours: 3 h is shorter than the work (4 h)"),
    (["--changeover-hours", "-1"], "--changeover-hours: -1 must not be negative"),
])
def test_choose_bad_input_exits_2(capsys, extra, text):
    with pytest.raises(SystemExit) as e:
        main(["spot", "choose", "--hours", "4", *extra])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and text in err and len(err.splitlines()) == 1


def test_prices_build_catalog(real_prices, tmp_path, capsys):
    out = tmp_path / "catalog.json.gz"
    assert main(["prices", "build-catalog", "--source", str(real_prices), "--out", str(out)]) == 0
    assert "72 instance types" in capsys.readouterr().out
    from effopt.spot.catalog import SnapshotCatalog

    assert SnapshotCatalog.load(out).spot("p3.2xlarge", "us-east-1", "use1-az1").usd_per_hour == 0.3351
