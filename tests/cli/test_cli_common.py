"""What every command shares: the progress bar, valid JSON, one-line errors with exit code 2."""

from __future__ import annotations

import io
import json
import math

from effopt.cli import dumps, finite, main
from effopt.cli.progress import ProgressBar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_terminal_and_stays_silent_in_a_log():
    tty, log = _Tty(), io.StringIO()
    for stream in (tty, log):
        bar = ProgressBar("simulate", stream=stream, width=10)
        for done in range(5):
            bar(done, 4, note=f"seed {42 + done}")
    assert log.getvalue() == ""
    text = tty.getvalue()
    assert "\rsimulate [#####.....] 2/4" in text and "[##########] 4/4" in text and text.endswith("\n")
    assert "seed 44" in text


def test_json_output_is_always_valid_json():
    value = {"slack": math.nan, "ratio": [1.0, math.inf, -math.inf], "ok": 2, "nested": {"x": (math.nan,)}}
    assert finite(value) == {"slack": None, "ratio": [1.0, None, None], "ok": 2, "nested": {"x": [None]}}
    assert json.loads(dumps(value)) == {"slack": None, "ratio": [1.0, None, None], "ok": 2, "nested": {"x": [None]}}


def test_an_input_error_is_one_line_and_exit_code_2(capsys):
    assert main(["rightsize", "backtest", "--trace", "/no/such/trace"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "/no/such/trace" in err


def _trace(folder, name, rows, gz=True):
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    text = "timestamp_anon,container_ip,value\n" + "".join(f"{t},{c},{v}\n" for t, c, v in rows)
    path = folder / (name + (".gz" if gz else ""))
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def test_a_report_on_unusable_data_says_so_instead_of_zero_waste(tmp_path, capsys):
    """All-NaN values, and timestamps that cannot be parsed: 'monthly cost 0.00, waste 0.00' was the answer."""
    rows = [(1000 + 60 * i, c, "nan") for i in range(300) for c in ("a", "b")]
    rows += [("yesterday", "c", 0.5) for _ in range(300)]
    _trace(tmp_path / "t", "pod_memory_util.csv", rows)
    assert main(["waste", "report", "--path", str(tmp_path / "t"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    q = data["data_quality"]
    assert q["samples_read"] == 900 and q["samples_used"] == 0 and q["headline"].startswith("No usable usage data")
    assert data["totals"]["cost"] is None and data["totals"]["waste"] is None
    assert main(["waste", "report", "--path", str(tmp_path / "t")]) == 0
    assert capsys.readouterr().out.startswith("DATA QUALITY: No usable usage data: 3 series, 900 samples read")


def test_damaged_trace_files_are_one_line_errors_naming_the_file(tmp_path, capsys):
    good = _trace(tmp_path / "ok", "pod_memory_util.csv", [(1000 + 60 * i, "a", 0.5) for i in range(100)])
    truncated = tmp_path / "trunc"
    truncated.mkdir()
    (truncated / "pod_memory_util.csv.gz").write_bytes(good.read_bytes()[:-20])
    not_gzip = tmp_path / "plain"
    not_gzip.mkdir()
    (not_gzip / "pod_memory_util.csv.gz").write_text("timestamp_anon,container_ip,value\n1,a,0.5\n")
    huge = tmp_path / "huge"
    _trace(huge, "pod_memory_util.csv", [(1, "a" * 200_000, 0.5)], gz=False)
    for folder, why in ((truncated, "is not a complete gzip file"), (not_gzip, "is not a complete gzip file"),
                        (huge, "is not a valid CSV file")):
        for command in (["waste", "report", "--path", str(folder)],
                        ["rightsize", "backtest", "--trace", str(folder), "--metric", "memory"]):
            assert main(command) == 2, (folder, command)
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("error: ") and why in err[0] and str(folder) in err[0], err


def test_json_stays_valid_where_figures_are_undefined(tmp_path, capsys):
    _trace(tmp_path / "one", "pod_memory_util.csv", [(1000, "a", "nan")])
    assert main(["rightsize", "backtest", "--trace", str(tmp_path / "one"), "--metric", "memory", "--json"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out and "Infinity" not in out
    json.loads(out)
    spec = tmp_path / "huge.yaml"
    spec.write_text("name: huge\noutputs: [b]\nnodes:\n"
                    "  a: {fn: effopt.graph.examples.load_data, inputs: {}, outputs: [x], params: {symbol: X, limit: 3}"
                    ", cost: 1.0e+308}\n"
                    "  b: {fn: effopt.graph.examples.compute_features, inputs: {raw_data: x}, outputs: [b],"
                    " params: {window: 2}, cost: 1.0e+308}\n")
    assert main(["graph", "plan", "--json", str(spec)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["makespan_s"] is None  # 2e308 overflows to infinity: undefined, not 'Infinity'


def test_bad_numbers_on_the_command_line_are_exit_code_2(tmp_path, capsys):
    _trace(tmp_path / "t", "pod_memory_util.csv", [(1000 + 60 * i, "a", 0.5) for i in range(100)])
    assert main(["waste", "report", "--path", str(tmp_path / "t"), "--memory-limit-gib", "inf"]) == 2
    assert "--memory-limit-gib must be a positive number, got inf" in capsys.readouterr().err
    import pytest

    with pytest.raises(SystemExit) as exit_:
        main(["rightsize", "backtest", "--trace", str(tmp_path / "t"), "--step", "0"])
    assert exit_.value.code == 2 and "argument --step: must be longer than 0" in capsys.readouterr().err


def test_far_future_timestamps_are_dropped_and_the_html_still_renders(tmp_path, capsys):
    rows = [(1.7e9 + 300 * i, "a", 0.3) for i in range(200)] + [(1e15, "a", 0.9)]
    _trace(tmp_path / "t", "pod_memory_util.csv", rows)
    out = tmp_path / "r.html"
    assert main(["waste", "report", "--path", str(tmp_path / "t"), "--html", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["data_quality"]["samples_read"] == 201 and data["data_quality"]["samples_used"] == 200
    assert "<html" in out.read_text()
