"""The trace importer: the pinned meaning of the values, layouts, names, groups."""

from __future__ import annotations

import numpy as np
import pytest

from effopt.spot.errors import TraceError
from effopt.spot.policies import GreedyPolicy, Job
from effopt.spot.simulate import simulate_job
from effopt.spot.traces import group_traces, load_trace, load_traces, region_of_zone
from tests.spot.conftest import write_trace


def test_value_is_the_number_of_obtainable_instances_so_one_means_available(tmp_path):
    t = load_trace(write_trace(tmp_path / "us-east-1a_v100_1.json", [1, 0, 2, 0, 1]))
    assert t.available().tolist() == [True, False, True, False, True]
    assert t.available(nodes=2).tolist() == [False, False, True, False, False]
    assert (t.zone, t.region, t.accelerator, t.accelerator_count, t.tick_h) == ("us-east-1a", "us-east-1", "v100",
                                                                                  1, 600 / 3600)


def test_a_running_spot_instance_is_lost_at_the_first_zero(tmp_path):
    # 1 1 1 0 ...: greedy takes spot at tick 0 and is preempted at tick 3 (a 0), not at a 1.
    t = load_trace(write_trace(tmp_path / "z_v100_1.json", [1, 1, 1, 0, 0, 0, 0, 0, 0, 0], gap_seconds=1800))
    seen = []
    simulate_job(GreedyPolicy(), Job(4, 10, 0.5), t.available()[None, :], 0, t.tick_h,
                 trace=lambda i, obs, act: seen.append((i, obs.preempted, obs.kind)))
    assert [i for i, pre, _ in seen if pre] == [3]
    assert [k for _, _, k in seen[:4]] == ["wait", "spot", "spot", "wait"]


@pytest.mark.parametrize("content, expect", [
    ('[1, 0, 1]', "unknown layout"),
    ('{"gap_seconds": 600, "data": [1]}', "unknown layout"),
    ('{"metadata": {"gap_seconds": 600}, "data": []}', "data is empty"),
    ('{"metadata": {"gap_seconds": 0}, "data": [1]}', "gap_seconds = 0"),
    ('{"metadata": {"gap_seconds": 600}, "data": [1, -1]}', "data[1] = -1"),
    ('{"metadata": {"gap_seconds": 600}, "data": [1, "x"]}', "data[1] = 'x'"),
    ('{"metadata": {"gap_seconds": 600}, "data": [1, 0.5]}', "data[1] = 0.5"),
    ('not json', "is not JSON"),
])
def test_bad_files_are_named_with_the_offending_item(tmp_path, content, expect):
    p = tmp_path / "us-west-2a_k80_1.json"
    p.write_text(content)
    with pytest.raises(TraceError) as err:
        load_trace(p)
    assert str(p) in str(err.value) and expect in str(err.value)


def test_names_regions_and_groups(tmp_path):
    assert region_of_zone("us-east-1f") == "us-east-1"
    assert region_of_zone("us-central1-c") == "us-central1"
    assert region_of_zone("weird") is None
    write_trace(tmp_path / "run" / "us-west-2a_v100_1.json", [1, 1, 0])
    write_trace(tmp_path / "run" / "us-west-2b_v100_1.json", [0, 1, 1, 1])
    write_trace(tmp_path / "run" / "us-west-2a_k80_8.json", [1])
    write_trace(tmp_path / "odd" / "trace.json", [1, 0])
    groups = load_traces(tmp_path)
    labels = {g.label: g.zones for g in groups}
    assert labels == {"odd/?": ("trace",), "run/k80_8": ("us-west-2a",), "run/v100_1": ("us-west-2a", "us-west-2b")}
    v100 = next(g for g in groups if g.label == "run/v100_1")
    assert v100.matrix().tolist() == [[True, True, False], [False, True, True]]  # cut to the shortest trace
    assert next(g for g in groups if g.label == "odd/?").traces[0].accelerator is None


def test_a_group_with_two_ticks_is_refused(tmp_path):
    a = load_trace(write_trace(tmp_path / "us-west-2a_v100_1.json", [1], gap_seconds=600))
    b = load_trace(write_trace(tmp_path / "us-west-2b_v100_1.json", [1], gap_seconds=195))
    with pytest.raises(TraceError, match="different ticks"):
        group_traces([a, b])


def test_a_folder_without_traces_is_an_error(tmp_path):
    with pytest.raises(TraceError, match="no \\*.json trace files"):
        load_traces(tmp_path)


def test_the_shared_traces_load_with_their_documented_shape(real_traces):
    groups = load_traces(real_traces)
    assert sorted(g.label for g in groups) == ["aws-02-15-2023/v100_1", "aws-10-26-2022/k80_1",
                                               "aws-10-26-2022/k80_8", "aws-10-26-2022/v100_1",
                                               "aws-10-26-2022/v100_8"]
    east = next(g for g in groups if g.label == "aws-02-15-2023/v100_1")
    assert east.zones == ("us-east-1a", "us-east-1c", "us-east-1d", "us-east-1f")
    assert east.traces[0].gap_seconds == 195 and east.ticks == 20158
    frac = {t.zone: round(float(t.available().mean()), 4) for t in east.traces}
    assert frac == {"us-east-1a": 0.1667, "us-east-1c": 0.4665, "us-east-1d": 0.4473, "us-east-1f": 0.5912}
    assert all(set(np.unique(t.values)) <= {0, 1} for g in groups for t in g.traces)
