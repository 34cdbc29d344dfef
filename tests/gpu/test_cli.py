"""``python -m effopt gpu simulate``: table, --json keys, --plot, and one-line errors."""

from __future__ import annotations

import json

import pytest

from effopt.cli import main

NODES = "sn,cpu_milli,memory_mib,gpu,model\n" + "".join(f"n{i},32000,131072,4,T4\n" for i in range(4))
PODS = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n" + "".join(
    f"p{i},{2000 + 1000 * (i % 3)},4096,1,{(250, 500, 1000)[i % 3]},\n" for i in range(18)) + "q,8000,8192,2,1000,\n"


@pytest.fixture
def files(tmp_path):
    n, p = tmp_path / "nodes.csv", tmp_path / "pods.csv"
    n.write_text(NODES)
    p.write_text(PODS)
    return n, p


def test_json_keys(files, capsys):
    n, p = files
    assert main(["gpu", "simulate", "--nodes", str(n), "--pods", str(p), "--policies", "fgd,best-fit,effopt",
                 "--seeds", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trace"] == "pods" and out["seeds"] == [42, 43]
    assert list(out["policies"]) == ["fgd", "best-fit", "effopt"]
    fgd = out["policies"]["fgd"]
    assert set(fgd) >= {"unallocated_pct", "fragmentation_pct", "failed_pods", "seconds"}
    assert set(fgd["unallocated_pct"]["100"]) == {"mean", "sd"}
    assert isinstance(fgd["unallocated_pct"]["100"]["mean"], float) and isinstance(fgd["failed_pods"], int)
    for x in ("90", "95", "100", "110", "120"):
        assert x in fgd["unallocated_pct"] and x in fgd["fragmentation_pct"]


def test_table_and_plot(files, tmp_path, capsys):
    n, p = files
    png = tmp_path / "curve.png"
    assert main(["gpu", "simulate", "--nodes", str(n), "--pods", str(p), "--policies", "random,fgd",
                 "--seeds", "3", "--plot", str(png), "--jobs", "2"]) == 0
    text = capsys.readouterr().out
    assert "x=100" in text and "x=100 vs fgd" in text and "random" in text and f"plot: {png}" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


@pytest.mark.parametrize(("extra", "message"), [
    (["--policies", "fgd,nope"], "error: --policies: unknown policy 'nope'"),
    (["--policies", ","], "error: --policies is empty"),
    (["--plot", "out.jpg"], "must end in .png"),
])
def test_bad_options(files, capsys, extra, message):
    n, p = files
    with pytest.raises(SystemExit) as info:
        main(["gpu", "simulate", "--nodes", str(n), "--pods", str(p), *extra])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_file_is_one_line(files, tmp_path, capsys):
    n, _ = files
    bad = tmp_path / "bad.csv"
    bad.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\nx,1,1,one,100\n")
    with pytest.raises(SystemExit) as info:
        main(["gpu", "simulate", "--nodes", str(n), "--pods", str(bad)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {bad}, row 1, column 'num_gpu': 'one' is not a number"
    with pytest.raises(SystemExit) as info:
        main(["gpu", "simulate", "--nodes", str(n), "--pods", str(bad), "--seeds", "0"])
    assert info.value.code == 2
