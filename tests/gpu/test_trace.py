"""Trace loaders: the real files when present, and every kind of bad row."""

from __future__ import annotations

import pytest

from effopt.gpu import TargetWorkload, TraceError, load_nodes, load_pods

NODE_HEAD = "sn,cpu_milli,memory_mib,gpu,model\n"
POD_HEAD = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_loads_nodes_and_pods(tmp_path):
    nodes = load_nodes(_write(tmp_path, "n.csv", NODE_HEAD + "a,64000,262144,2,P100\nc,32000,1024,0,\n"))
    assert [(n.name, n.gpus, n.model) for n in nodes] == [("a", 2, "P100")]  # GPU nodes only by default
    assert len(load_nodes(tmp_path / "n.csv", gpu_only=False)) == 2
    pods = load_pods(_write(tmp_path, "p.csv", POD_HEAD + "x,6000,12288,1,460,\ny,8000,100,0,0,\n"
                            "z,1000,1,2,1000,P100|V100M16\n"), {"P100", "V100M16"})
    assert [(p.name, p.num_gpu, p.gpu_milli, p.models) for p in pods] == [
        ("x", 1, 460, ()), ("y", 0, 0, ()), ("z", 2, 1000, ("P100", "V100M16"))]


@pytest.mark.parametrize(("text", "match"), [
    ("name,cpu_milli,num_gpu,gpu_milli\nx,1,1,1\n", r"missing column\(s\) memory_mib"),
    (POD_HEAD + "x,-5,1,1,100,\n", r"row 1, column 'cpu_milli': -5 is negative"),
    (POD_HEAD + "x,1,1,1,100,\ny,abc,1,1,100,\n", r"row 2, column 'cpu_milli': 'abc' is not a number"),
    (POD_HEAD + "x,1,1,1,1.5,\n", r"column 'gpu_milli': '1.5' is not a whole number"),
    (POD_HEAD + "x,1,1,2,500,\n", r"column 'gpu_milli': a 2-GPU pod must take whole GPUs"),
    (POD_HEAD + "x,1,1,1,1500,\n", r"more than one GPU"),
    (POD_HEAD + "x,1,1,1,0,\n", r"num_gpu=1 with gpu_milli=0"),
    (POD_HEAD + "x,1,1,1,100,A100\n", r"column 'gpu_spec': unknown GPU model 'A100'"),
    (POD_HEAD + "x,1,1,1,100,,extra\n", r"row 1: 7 fields, the header has 6"),
    (POD_HEAD, r"no pods"),
])
def test_bad_pod_rows_name_file_row_and_column(tmp_path, text, match):
    path = _write(tmp_path, "bad.csv", text)
    with pytest.raises(TraceError, match=match) as info:
        load_pods(path, {"P100"})
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("text", "match"), [
    ("sn,cpu_milli,gpu,model\na,1,1,T4\n", r"missing column\(s\) memory_mib"),
    (NODE_HEAD + "a,1,1,-2,T4\n", r"row 1, column 'gpu': -2 is negative"),
    (NODE_HEAD + "a,1,1,2,\n", r"column 'model': 2 GPUs without a GPU model"),
    (NODE_HEAD + "a,1,1,1,T4\na,1,1,1,T4\n", r"row 2, column 'sn': duplicate node 'a'"),
    (NODE_HEAD + "a,x,1,1,T4\n", r"column 'cpu_milli': 'x' is not a number"),
])
def test_bad_node_rows(tmp_path, text, match):
    with pytest.raises(TraceError, match=match):
        load_nodes(_write(tmp_path, "bad.csv", text))


def test_missing_file(tmp_path):
    with pytest.raises(TraceError, match="no such file"):
        load_nodes(tmp_path / "absent.csv")


def test_real_trace(data_dir):
    nodes = load_nodes(data_dir / "openb_node_list_gpu_node.csv")
    assert len(nodes) == 1213 and sum(n.gpus for n in nodes) == 6212
    pods = load_pods(data_dir / "openb_pod_list_default.csv", {n.model for n in nodes})
    assert len(pods) == 8152
    w = TargetWorkload.from_requests(pods)
    assert len(w) == 35  # the published simulator's 35 types (95% of pods, CPU-only types included)
    assert sum(p.num_gpu == 0 for p in pods) == 1088
    multi = load_pods(data_dir / "openb_pod_list_multigpu20.csv")  # no gpu_spec column in this file
    assert len(multi) == 8324 and all(not p.models for p in multi)
