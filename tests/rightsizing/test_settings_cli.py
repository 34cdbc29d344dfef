"""Typed recommender settings, ``--set`` and ``--by-history`` on the ``rightsize`` CLI, and the OOM re-plan."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from effopt.cli import main
from effopt.metrics.series import make_series
from effopt.rightsizing import EffoptSettings, KrrSettings, VpaSettings, get_recommender
from effopt.rightsizing.base import recommender_names
from effopt.rightsizing.oom import oom_bump, plan_after_oom
from effopt.rightsizing.recommend import recommend_all
from effopt.rightsizing.settings import SettingError, describe, parse_assignments, parse_settings

MIB = 1024**2
GIB = 1024**3
T0 = 1_700_000_000.0


# -- settings --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [EffoptSettings, VpaSettings, KrrSettings])
def test_every_setting_declares_a_description_and_the_defaults_are_valid(cls):
    infos = describe(cls)
    assert [i.name for i in infos] == [f.name for f in fields(cls)]
    assert all(len(i.description) > 10 for i in infos)
    cls()  # the defaults pass their own bounds


def test_invalid_values_are_rejected_with_the_field_named():
    with pytest.raises(SettingError, match=r"EffoptSettings.target_overrun_rate: must be in \(0, 1\), got 0.0"):
        EffoptSettings(target_overrun_rate=0.0)
    with pytest.raises(SettingError, match=r"VpaSettings.memory_intervals: must be an integer, got 1.5"):
        VpaSettings(memory_intervals=1.5)
    with pytest.raises(SettingError, match=r"KrrSettings.cpu_percentile: must be in \(0, 100\], got 120"):
        KrrSettings(cpu_percentile=120)
    with pytest.raises(SettingError, match="EffoptSettings.trend: must be true or false"):
        parse_settings(EffoptSettings, {"trend": "maybe"})
    with pytest.raises(SettingError, match="EffoptSettings.half_life_s: must be a number, got 'soon'"):
        parse_settings(EffoptSettings, {"half_life_s": "soon"})
    with pytest.raises(SettingError, match="has no setting.* nope"):
        parse_settings(EffoptSettings, {"nope": "1"})
    with pytest.raises(ValueError, match="target_overrun_rate"):  # through the recommender, as before
        get_recommender("effopt", target_overrun_rate=1.0)


def test_values_are_parsed_by_type_from_strings_and_json_values():
    s = parse_settings(EffoptSettings, {"target_overrun_rate": "0.03", "trend": "false", "min_samples": "20",
                                        "growth_quantile": "none", "weekly_min_cycles": "inf", "hysteresis": 0})
    assert (s.target_overrun_rate, s.trend, s.min_samples, s.growth_quantile) == (0.03, False, 20, None)
    assert s.weekly_min_cycles == float("inf") and s.hysteresis == 0.0 and isinstance(s.hysteresis, float)
    assert parse_assignments(["a=1", " b = x=y "]) == {"a": "1", "b": "x=y"}
    with pytest.raises(SettingError, match="expected name=value"):
        parse_assignments(["a"])
    # the DAG's future recommender_settings param: a {name: value} dict through get_recommender / recommend_all
    rec = get_recommender("effopt", {"target_overrun_rate": "0.05", "level_percentile": 0.9})
    assert (rec.settings.target_overrun_rate, rec.settings.level_percentile) == (0.05, 0.9)
    ts = T0 + 60.0 * np.arange(600)
    series = [make_series("w", "c", "memory", ts, GIB * (1 + 0.1 * np.sin(ts / 900)))]
    loose, _ = recommend_all(series, "vpa", {"safety_margin": "0.5"})
    tight, _ = recommend_all(series, "vpa", {"safety_margin": "0"})
    assert loose[0].target == pytest.approx(tight[0].target * 1.5)
    assert recommender_names() == ["effopt", "krr", "vpa"]


# -- the CLI -----------------------------------------------------------------------------------------------------------
def trace(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)
    rows = []
    for c, base in (("a", 0.3), ("b", 0.6), ("d", 0.2)):
        for i in range(12 * 60):
            rows.append(f"{1000 + 60 * i},{c},{base + 0.05 * rng.random():.4f}\n")
    path = tmp_path / "pod_memory_util.csv"
    path.write_text("timestamp_anon,container_ip,value\n" + "".join(rows))
    return path


def test_cli_set_changes_the_recommender_it_names(tmp_path, capsys):
    path = trace(tmp_path)
    base = ["rightsize", "backtest", "--trace", str(path), "--json"]
    assert main(base) == 0
    default = json.loads(capsys.readouterr().out)["recommenders"]
    assert main([*base, "--set", "vpa.safety_margin=0.5"]) == 0
    changed = json.loads(capsys.readouterr().out)["recommenders"]
    assert changed["vpa"]["mean_slack"] > default["vpa"]["mean_slack"]
    for name in ("effopt", "krr"):  # their scores unchanged; their gap closed is measured from VPA's slack
        assert {k: v for k, v in changed[name].items() if k != "gap_closed"} == {
            k: v for k, v in default[name].items() if k != "gap_closed"}
    # a bare name goes to every recommender that has it (only effopt has target_overrun_rate)
    assert main([*base, "--set", "target_overrun_rate=0.2"]) == 0
    assert json.loads(capsys.readouterr().out)["recommenders"]["vpa"] == default["vpa"]


@pytest.mark.parametrize("item, message", [
    ("nope=1", "no recommender of effopt, krr, vpa has a setting 'nope'"),
    ("effopt.target_overrun_rate=2", r"EffoptSettings.target_overrun_rate: must be in \(0, 1\), got 2.0"),
    ("vpa.target_overrun_rate=0.1", "recommender 'vpa' has no setting 'target_overrun_rate'"),
    ("x.y=1", "'x' is not one of the recommenders"),
    ("trend", "expected name=value"),
])
def test_cli_bad_set_is_one_line_naming_it_and_exit_2(tmp_path, capsys, item, message):
    assert main(["rightsize", "backtest", "--trace", str(trace(tmp_path)), "--set", item]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(message, err[0]), err


def test_cli_by_history_folds_and_settings(tmp_path, capsys):
    path = trace(tmp_path)
    assert main(["rightsize", "backtest", "--trace", str(path), "--by-history", "--folds", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    bands = out["by_history"]
    assert [b["hours"] for b in bands] == [6, 7, 8, 9, 10, 11]
    assert set(bands[0]) == {"hours", "windows", "hindsight", "recommenders"} and bands[0]["windows"] == 3
    assert set(bands[0]["recommenders"]["effopt"]) == {"mean_slack", "overrun_events", "gap_closed"}
    assert main(["rightsize", "backtest", "--trace", str(path), "--by-history"]) == 0
    text = capsys.readouterr().out
    assert "gap closed" in text and "hindsight" in text and "by hours of history" in text
    assert main(["rightsize", "backtest", "--trace", str(path), "--folds", "0"]) == 2
    assert "--folds must be >= 1" in capsys.readouterr().err
    assert main(["rightsize", "settings", "--recommender", "effopt"]) == 0
    listing = capsys.readouterr().out
    assert all(f.name in listing for f in fields(EffoptSettings)) and "(0, 1)" in listing
    trend = next(line for line in listing.splitlines() if " trend " in line)
    assert "true, false" in trend and "inf" not in trend  # a switch has no numeric range
    assert main(["rightsize", "recommend", "--trace", str(path), "--set", "min_samples=5000"]) == 0
    assert "needs at least 5000" in capsys.readouterr().out


# -- the OOM re-plan -------------------------------------------------------------------------------------------
def test_oom_bump_is_vpas_rule():
    assert oom_bump(GIB) == pytest.approx(1.2 * GIB)  # x1.2 beats +100 MiB above 500 MiB
    assert oom_bump(200 * MIB) == pytest.approx(300 * MIB)  # +100 MiB beats x1.2 (240 MiB)
    assert oom_bump(500 * MIB) == pytest.approx(600 * MIB)  # the two agree at 500 MiB
    with pytest.raises(ValueError, match="non-negative"):
        oom_bump(-1.0)


def test_plan_after_oom_uses_the_largest_of_peak_request_and_limit():
    plan = plan_after_oom(900 * MIB, request_bytes=512 * MIB, limit_bytes=GIB)
    assert plan.used_bytes == GIB and plan.limit_bytes == pytest.approx(1.2 * GIB)
    assert plan.reason.startswith("OOM kill: limit 1024 MiB -> max(+100 MiB, x1.2) = 1229 MiB")
    kept = plan_after_oom(900 * MIB, recommended_bytes=2 * GIB)
    assert kept.limit_bytes == 2 * GIB and "kept the higher recommendation" in kept.reason
    assert plan_after_oom(300 * MIB).limit_bytes == pytest.approx(400 * MIB)
    assert plan.as_dict()["limit_bytes"] == plan.limit_bytes
    with pytest.raises(ValueError, match="needs the peak usage"):
        plan_after_oom(None)
