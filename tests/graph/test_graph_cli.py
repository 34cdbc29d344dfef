"""``python -m effopt graph validate|plan|dot|run``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from effopt.cli import main
from tests.graph.conftest import REPO, SPECS

ML = str(SPECS / "ml_models.yaml")


def test_plan_json_has_the_keys_other_tools_read(capsys):
    assert main(["graph", "plan", "--json", ML]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in (
        "nodes_before",
        "nodes_after",
        "merged",
        "culled",
        "fused",
        "stages",
        "critical_path",
        "makespan_s",
        "parallelism",
    ):
        assert key in data
    assert (data["nodes_before"], data["nodes_after"]) == (17, 10)
    assert ["ridge_features", "lasso_features"] in data["merged"] and len(data["merged"]) == 5
    assert data["culled"] == ["price_summary"]
    assert data["fused"] == [["ridge_scaled", "ridge_clipped"]]
    assert data["stages"][0] == ["load_prices"] and sum(len(s) for s in data["stages"]) == 10
    assert data["critical_path"][0] == "load_prices" and data["critical_path"][-1] == "compare"
    assert data["makespan_s"] == 6.9
    assert data["parallelism"] == round(8.5 / 6.9, 4)


def test_plan_options_change_the_plan(capsys):
    assert main(["graph", "plan", "--json", "--no-cse", "--no-cull", "--fuse-max-cost", "0", ML]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["nodes_after"] == 17 and data["merged"] == [] and data["fused"] == []
    gpu = str(SPECS / "gpu_training.yaml")
    assert main(["graph", "plan", "--json", "--gpus", "2", gpu]) == 0
    two = json.loads(capsys.readouterr().out)
    assert ["train_mlp_wide", "train_mlp", "train_ridge"] in two["stages"]
    assert main(["graph", "plan", "--json", gpu]) == 0  # the spec's capacity: one GPU
    one = json.loads(capsys.readouterr().out)
    assert not any({"train_mlp", "train_mlp_wide"} <= set(s) for s in one["stages"])
    assert one["makespan_s"] > two["makespan_s"]


def test_plan_text_shows_stages_critical_path_and_eliminated_nodes(capsys):
    assert main(["graph", "plan", ML]) == 0
    out = capsys.readouterr().out
    assert "merged lasso_features into ridge_features" in out
    assert "culled price_summary" in out
    assert "fused ridge_scaled -> ridge_clipped into ridge_scaled__ridge_clipped" in out
    assert "critical path:      load_prices -> ridge_features" in out
    assert "estimated makespan: 6.9 s" in out


def test_validate_reports_every_problem_and_exit_code(tmp_path, capsys):
    assert main(["graph", "validate", *map(str, sorted(SPECS.glob("*.yaml")))]) == 0
    assert capsys.readouterr().out.count("ok ") == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("outputs: [y]\nnodes:\n  a: {fn: nowhere.fn, inputs: [x], outputs: [y], cost: fast}\n")
    assert main(["graph", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml is invalid (3 problems)" in err
    assert "'cost' must be a number" in err and "input 'x'" in err and "'nowhere.fn'" in err


def test_dot_writes_graphviz_and_png_when_dot_exists(tmp_path, capsys):
    assert main(["graph", "dot", ML, "--out", str(tmp_path)]) == 0
    out = tmp_path / "ml_models.dot"
    text = out.read_text()
    assert text.startswith('digraph "ml_models"') and 'subgraph "cluster_stage_1"' in text
    assert '"ridge_split" -> "train_lasso" [label="ridge_train"]' in text
    streams = capsys.readouterr()
    if shutil.which("dot"):
        assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "graphviz 'dot' is not installed" in streams.err and not out.with_suffix(".png").exists()
    raw = tmp_path / "raw"
    assert main(["graph", "dot", "--raw", ML, "--out", str(raw)]) == 0
    assert "merged into ridge_features" in (raw / "ml_models.dot").read_text()
    assert "culled" in (raw / "ml_models.dot").read_text()


def test_dot_without_out_writes_into_a_new_temporary_folder_not_the_working_directory(tmp_path, monkeypatch,
                                                                                       capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["graph", "dot", ML, str(SPECS / "seed_pipeline.yaml")]) == 0
    assert list(tmp_path.iterdir()) == []
    written = [Path(line.split("wrote ", 1)[1]) for line in capsys.readouterr().out.splitlines()]
    dots = [w for w in written if w.suffix == ".dot"]
    assert [d.name for d in dots] == ["ml_models.dot", "seed_pipeline.dot"]
    assert dots[0].parent == dots[1].parent and dots[0].parent.name.startswith("effopt-graph-dot-")
    assert all(d.read_text().startswith("digraph") for d in dots)


def test_plan_takes_several_specs(capsys):
    gpu, seed = str(SPECS / "gpu_training.yaml"), str(SPECS / "seed_pipeline.yaml")
    assert main(["graph", "plan", "--json", ML, gpu, seed]) == 0
    summaries = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in summaries] == ["ml_models", "gpu_training", "seed_pipeline"]
    assert main(["graph", "plan", ML, seed]) == 0
    out = capsys.readouterr().out
    assert out.count("critical path:") == 2 and "graph ml_models:" in out and "graph seed_pipeline:" in out


def test_run_prints_outputs_and_a_progress_bar(capsys):
    assert main(["graph", "run", str(SPECS / "seed_pipeline.yaml"), "--input", "symbol=IBM", "--json"]) == 0
    streams = capsys.readouterr()
    from effopt.graph import examples as ex

    expected = ex.train_model(ex.compute_features(ex.load_data("IBM", 1000)))
    assert json.loads(streams.out) == {"model": expected}
    assert "[##############################] 3/3" in streams.err and "train_model" in streams.err


def test_run_errors_are_clear(tmp_path, capsys):
    spec = tmp_path / "needs.yaml"
    spec.write_text(
        "inputs: [x]\noutputs: [y]\nnodes:\n  a: {fn: tests.graph.graph_fns.fail, inputs: {a: x}, outputs: [y]}\n"
    )
    assert main(["graph", "run", str(spec), "--quiet"]) == 1
    assert "needs input(s) 'x'" in capsys.readouterr().err
    assert main(["graph", "run", str(spec), "--quiet", "-i", "x=3"]) == 1
    assert "node 'a' failed: RuntimeError: boom on 3" in capsys.readouterr().err


def test_module_entry_point():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "plugins"), str(REPO)]))
    done = subprocess.run(
        [sys.executable, "-m", "effopt", "graph", "plan", "--json", str(SPECS / "seed_pipeline.yaml")],
        capture_output=True, text=True, env=env, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stages"] == [["load_data"], ["compute_features"], ["train_model"]]


def test_plan_refuses_a_capacity_that_is_not_a_finite_number(capsys):
    """``graph plan --gpus nan`` once looped forever, growing memory."""
    import pytest

    for bad in ("nan", "inf", "-1"):
        with pytest.raises(SystemExit) as exit_:
            main(["graph", "plan", "--gpus", bad, str(SPECS / "gpu_training.yaml")])
        assert exit_.value.code == 2
        assert f"argument --gpus: must be a finite number >= 0, got '{bad}'" in capsys.readouterr().err
