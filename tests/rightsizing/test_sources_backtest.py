"""Data quality, trace and Airflow-task sources, the backtest's scoring and the ``rightsize`` CLI."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from effopt.cli import main
from effopt.metrics import AirflowTaskSource, TraceSource, clean_series, make_series
from effopt.rightsizing import NotEnoughData, backtest, get_recommender
from effopt.rightsizing.base import Evidence, Recommendation, Recommender
from effopt.store import EffoptStore, TaskUsageRecord

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "alibaba-genai-2026"
GIB = 1024**3
T0 = 1_700_000_000.0


# -- data quality -------------------------------------------------------------------
def test_bad_values_are_dropped_and_reported_never_zeroed():
    ts = [5, 1, 2, 2, 3, 4, 6, 100]
    vs = [5.0, 1.0, float("nan"), 2.0, -3.0, float("inf"), 6.0, 1e20]
    t, v, q = clean_series(ts, vs, unit="bytes")
    assert list(t) == [1, 2, 5, 6] and list(v) == [1.0, 2.0, 5.0, 6.0]
    assert (q.samples_in, q.samples, q.nan, q.negative, q.huge, q.out_of_order) == (8, 4, 2, 1, 1, 1)
    assert 0.0 not in v
    joined = " ".join(q.issues)
    assert "2 NaN/inf" in joined and "1 negative" in joined and "implausibly large" in joined


def test_duplicates_gaps_and_counter_resets():
    ts = np.array([0, 60, 60, 120, 180, 900, 960], dtype=float)
    t, v, q = clean_series(ts, [1, 2, 3, 4, 5, 6, 7], unit="cores")
    assert list(t) == [0, 60, 120, 180, 900, 960] and v[1] == 3  # last value of a duplicate kept
    assert q.duplicates == 1 and q.gaps == 1 and q.largest_gap_s == 720
    _, c, q = clean_series([0, 60, 120, 180, 240], [10, 20, 5, 15, 3], unit="cores", counter=True)
    assert list(c) == [10, 20, 25, 35, 38] and q.counter_resets == 2


def test_empty_single_and_all_bad_series_give_clear_results():
    empty = make_series("w", "c", "memory", [], [])
    assert not empty.quality.usable and "no samples" in empty.quality.issues
    for name in ("vpa", "krr", "effopt"):
        with pytest.raises(NotEnoughData, match="w/c memory has 0 usable sample"):
            get_recommender(name).recommend(empty)
    nan = make_series("w", "c", "memory", [1, 2], [float("nan"), -1])
    with pytest.raises(NotEnoughData, match="NaN"):
        get_recommender("vpa").recommend(nan)
    single = make_series("w", "c", "memory", [T0], [GIB])
    assert single.quality.too_little_history
    assert get_recommender("vpa").recommend(single).target > GIB  # VPA recommends from one sample
    with pytest.raises(NotEnoughData, match="needs 100 points"):
        get_recommender("krr").recommend(single)
    with pytest.raises(NotEnoughData, match="at least 10"):
        get_recommender("effopt").recommend(single)
    huge = make_series("w", "c", "memory", T0 + 60.0 * np.arange(20), [GIB] * 19 + [1e30])
    assert huge.quality.huge == 1 and get_recommender("effopt").recommend(huge).target < 2 * GIB
    with pytest.raises(ValueError, match="unknown resource kind 'disk'"):
        make_series("w", "c", "disk", [1], [1])
    with pytest.raises(ValueError, match="3 timestamps but 2 values"):
        clean_series([1, 2, 3], [1, 2], unit="bytes")


def test_effopt_after_a_level_of_zero_has_a_finite_target():
    # an idle GPU (0% for 5 hours) that starts working at 50%: the hours after a level of 0 give no ratio,
    # not an infinite one (which made the target infinite and the recommendation fail)
    ts = T0 + 60.0 * np.arange(10 * 60)
    vs = np.where(ts < T0 + 5 * 3600, 0.0, 50.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in a division either
        r = get_recommender("effopt").recommend(make_series("w", "c", "gpu_util", ts, vs))
    assert 50.0 <= r.target < 60.0, r.evidence.notes


# -- trace source ---------------------------------------------------------------------
def write_trace(path: Path, rows: list[tuple[float, str, str]],
                header: str = "timestamp_anon,container_ip,value") -> Path:
    text = header + "\n" + "".join(f"{t},{c},{v}\n" for t, c, v in rows)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def test_trace_source_reads_both_column_spellings(tmp_path):
    d = tmp_path / "trace"
    d.mkdir()
    write_trace(d / "pod_memory_util.csv.gz", [(120, "b", "0.5"), (60, "a", "0.25"), (0, "a", "0.5"), (60, "a", "x")])
    write_trace(d / "pod_gpu_memory_used_bytes.csv", [(0, "a", "1e9")], header="timestamp,container,value")
    src = TraceSource(d)
    assert set(src.resources()) == {"memory", "gpu_memory"}
    mem = {s.container: s for s in src.series("memory")}
    assert list(mem["a"].timestamps) == [0, 60] and list(mem["a"].values) == [0.5, 0.25]
    # "x" is not a number: dropped, reported
    assert mem["a"].unit == "fraction" and mem["a"].limit == 1.0 and mem["a"].quality.nan == 1
    (gpu,) = src.series("gpu_memory")
    assert gpu.unit == "bytes" and gpu.values[0] == 1e9
    with pytest.raises(FileNotFoundError, match="no cpu trace file"):
        src.series("cpu")
    bad = write_trace(tmp_path / "pod_cpu_usage.csv", [(0, "a", "1")], header="time,id,value")
    with pytest.raises(ValueError, match="no column timestamp or timestamp_anon"):
        TraceSource(bad).series("cpu")


# -- backtest scoring -----------------------------------------------------------------
class Fixed(Recommender):
    """Recommends a fixed value per decision (test double for the scoring)."""

    name = "fixed"
    settings_class = dict

    def __init__(self, values: list[float]) -> None:
        self.values = list(values)

    def recommend(self, series, previous=None):
        v = self.values.pop(0)
        return Recommendation(series.workload, series.container, series.resource, series.unit, "fixed", v, v, v,
                              0.0, Evidence(len(series), None, None, None, "fixed"))


def test_backtest_scoring_by_hand():
    # one container, samples every 30 min for 3 h; warmup 1 h, step 1 h -> decisions at 1 h and 2 h
    ts = T0 + 1800.0 * np.arange(6)
    vs = np.array([0.1, 0.1, 0.4, 0.6, 0.5, 0.9])
    s = make_series("w", "c", "memory", ts, vs, unit="fraction", limit=1.0)
    res = backtest([s], {"a": Fixed([0.8, 0.8]), "b": Fixed([0.5, 1.0])}, step_s=3600, warmup_s=3600)
    a, b = res.recommenders["a"], res.recommenders["b"]
    # a: window 1 (0.4, 0.6) rec 0.8 -> slack 0.5, 0.25; window 2 (0.5, 0.9) -> 0.375, -0.125; overrun in window 2
    assert a.mean_slack == pytest.approx((0.5 + 0.25 + 0.375 - 0.125) / 4)
    assert (a.overrun_events, a.overrun_fraction, a.changes, a.windows, a.samples) == (1, 0.5, 0, 2, 4)
    # b: rec 0.5 then 1.0 -> slack 0.2, -0.2, 0.5, 0.1; overrun in window 1; one change
    assert b.mean_slack == pytest.approx((0.2 - 0.2 + 0.5 + 0.1) / 4)
    assert (b.overrun_events, b.changes) == (1, 1)
    d = res.deployed  # deployed limit 1.0
    assert d.mean_slack == pytest.approx((0.6 + 0.4 + 0.5 + 0.1) / 4) and d.overrun_events == 0
    # the hindsight limit: the container's peak over its scored windows (0.9), no overrun
    assert res.hindsight.mean_slack == pytest.approx((0.5 + 0.3 + 0.4 + 0.0) / 0.9 / 4)
    assert res.as_json() == {
        "metric": "memory",
        "recommenders": {"a": {"mean_slack": a.mean_slack, "overrun_events": 1, "overrun_fraction": 0.5,
                               "changes": 0, "gap_closed": None},  # no VPA scored: no gap to measure
                         "b": {"mean_slack": b.mean_slack, "overrun_events": 1, "overrun_fraction": 0.5,
                               "changes": 1, "gap_closed": None}},
        "deployed": {"mean_slack": d.mean_slack, "overrun_events": 0, "overrun_fraction": 0.0, "changes": 0},
        "hindsight": {"mean_slack": res.hindsight.mean_slack},
    }


def test_backtest_reports_every_scored_window():
    ts = T0 + 1800.0 * np.arange(6)
    s = make_series("w", "c", "memory", ts, np.array([0.1, 0.1, 0.4, 0.6, 0.5, 0.9]), unit="fraction", limit=1.0)
    seen = []
    backtest([s], {"a": Fixed([0.8, 0.7]), "b": Fixed([0.5, 1.0])}, step_s=3600, warmup_s=3600,
             on_window=lambda series, t, recs, usage: seen.append(
                 (series.container, t - T0, {n: r.target for n, r in recs.items()}, list(usage))))
    assert seen == [("c", 3600.0, {"a": 0.8, "b": 0.5}, [0.4, 0.6]), ("c", 7200.0, {"a": 0.7, "b": 1.0}, [0.5, 0.9])]


def test_backtest_sees_only_the_past_and_skips_windows_without_data():
    seen: list[float] = []

    class Spy(Fixed):
        def recommend(self, series, previous=None):
            seen.append(series.timestamps[-1])
            if len(series) < 3:
                raise NotEnoughData("too short")
            return super().recommend(series, previous)

    ts = T0 + 1800.0 * np.arange(8)
    s = make_series("w", "c", "memory", ts, np.ones(8), unit="fraction")
    res = backtest([s], {"spy": Spy([2.0] * 10)}, step_s=3600, warmup_s=1800)
    assert seen == [ts[0], ts[2], ts[4], ts[6]]  # decisions at 0.5 h, 1.5 h, ...: only earlier samples
    assert res.skipped_windows == 1 and res.recommenders["spy"].windows == 3
    assert res.deployed is None  # no limit known
    with pytest.raises(ValueError, match="one resource kind at a time"):
        backtest([s, make_series("w", "c", "cpu", ts, np.ones(8))], {"spy": Spy([1.0])})


# -- CLI ------------------------------------------------------------------------------
def small_trace(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)
    rows = []
    for c in ("a", "b"):
        base = 0.3 if c == "a" else 0.6
        for i in range(12 * 60):
            rows.append((1000 + 60 * i, c, f"{base + 0.05 * rng.random():.4f}"))
    return write_trace(tmp_path / "pod_memory_util.csv", rows)


def test_cli_backtest_json_keys(tmp_path, capsys):
    path = small_trace(tmp_path)
    assert main(["rightsize", "backtest", "--trace", str(path), "--metric", "memory", "--recommenders",
                 "effopt,vpa,krr", "--step", "1h", "--warmup", "6h", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"metric", "recommenders", "deployed", "hindsight"} and out["metric"] == "memory"
    assert set(out["recommenders"]) == {"effopt", "vpa", "krr"}
    keys = {"mean_slack", "overrun_events", "overrun_fraction", "changes"}
    assert set(out["deployed"]) == keys
    for scores in [*out["recommenders"].values(), out["deployed"]]:
        assert keys <= set(scores) <= keys | {"gap_closed"}
        assert isinstance(scores["overrun_events"], int) and isinstance(scores["changes"], int)
    assert out["recommenders"]["vpa"]["gap_closed"] == 0.0 and set(out["hindsight"]) == {"mean_slack"}
    assert out["deployed"]["changes"] == 0 and out["deployed"]["mean_slack"] > 0.3


def test_cli_table_progress_and_errors(tmp_path, capsys):
    path = small_trace(tmp_path)
    assert main(["rightsize", "backtest", "--trace", str(tmp_path), "--metric", "memory"]) == 0
    streams = capsys.readouterr()
    assert "recommender  mean slack  vs vpa" in streams.out and "deployed" in streams.out
    assert streams.err == ""  # the progress bar draws on a terminal only, never into a log
    assert main(["rightsize", "backtest", "--trace", str(path), "--recommenders", "effopt,x"]) == 2
    assert "unknown recommender 'x'" in capsys.readouterr().err
    assert main(["rightsize", "backtest", "--trace", str(tmp_path), "--metric", "gpu_memory"]) == 2
    assert "no gpu_memory trace file" in capsys.readouterr().err
    assert main(["rightsize", "recommend", "--trace", str(path), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["container"] for x in lines] == ["a", "b"] and all(x["target"] > 0 for x in lines)
    assert {"lower", "upper", "confidence", "evidence", "quality"} <= set(lines[0])


def test_module_entry_point(tmp_path):
    path = small_trace(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "plugins"), str(REPO)]))
    done = subprocess.run([sys.executable, "-m", "effopt", "rightsize", "backtest", "--trace", str(path),
                           "--metric", "memory", "--json"], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)["recommenders"]) == {"effopt", "vpa", "krr"}


# -- Airflow task usage -----------------------------------------------------------------
def test_airflow_task_source(tmp_path):
    store = EffoptStore(f"sqlite:///{tmp_path / 'effopt.db'}")

    def rec(task: str, run: int, cpu: float, wall: float, rss: int) -> TaskUsageRecord:
        start = T0 + 3600 * run
        return TaskUsageRecord("etl", task, f"r{run}", -1, 1, "h", 1, start, start + wall, wall, cpu, 0.0, cpu, rss,
                               0, "process", "success")

    for r in (rec("load", 0, 30, 60, 2 * GIB), rec("load", 1, 90, 60, 3 * GIB), rec("train", 0, 10, 0, GIB)):
        store.record_task_usage(r)
    src = AirflowTaskSource(store, dag_ids=["etl"])
    cpu = {s.workload: s for s in src.series("cpu")}
    assert list(cpu["etl/load"].values) == [0.5, 1.5]
    assert list(cpu["etl/load"].timestamps) == [T0 + 60, T0 + 3660]
    assert cpu["etl/train"].quality.nan == 1 and len(cpu["etl/train"]) == 0  # no wall time: reported, not zero
    mem = {s.workload: s for s in src.series("memory")}
    assert list(mem["etl/load"].values) == [2 * GIB, 3 * GIB] and mem["etl/load"].labels["task_id"] == "load"
    with pytest.raises(ValueError, match="no 'gpu_memory' usage"):
        src.series("gpu_memory")
    store.dispose()


# -- the real trace -------------------------------------------------------------------
@pytest.mark.skipif(not DATA.is_dir(), reason=f"real trace not present at {DATA}")
def test_real_trace_backtest_runs_and_scores_every_recommender():
    src = TraceSource(DATA)
    mem = src.series("memory")
    assert len(mem) >= 100 and all(s.unit == "fraction" for s in mem)
    assert sum(s.quality.negative for s in mem) >= 1  # the trace has a negative utilisation sample
    res = backtest(mem, {"effopt": get_recommender("effopt"), "vpa": get_recommender("vpa"),
                         "krr": get_recommender("krr"), "fleet": get_recommender("effopt", localize_prior=False)})
    assert res.deployed is not None and res.deployed.overrun_events == 0
    vpa = res.recommenders["vpa"]
    assert 0 < vpa.mean_slack < res.deployed.mean_slack
    assert res.recommenders["effopt"].mean_slack < vpa.mean_slack
    # with the whole fleet's prior (issue 5's effopt) no more overruns than VPA; the prior localized to containers
    # of the same size (issue 19's cold start) closes more of VPA's gap to the hindsight limit, at 22 overruns
    # against VPA's 20 here (bench/RESULTS-rightsizing.md)
    assert res.recommenders["fleet"].overrun_events <= vpa.overrun_events
    assert res.gap_closed("effopt") > res.gap_closed("fleet") > 0.5
    gpu = src.series("gpu_memory")
    r = get_recommender("effopt").recommend(max(gpu, key=len))
    assert r.gpu is not None and r.gpu.smallest_gpu is not None
