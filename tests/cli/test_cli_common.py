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
