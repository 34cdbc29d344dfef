"""Instance choice: the expected-cost formula, the spot / on-demand rule, diversification, bad input."""

from __future__ import annotations

import json
import math

import pytest

from effopt.spot.catalog import SnapshotCatalog, advisor_band
from effopt.spot.choose import JobSpec, choose
from effopt.spot.errors import SpotError, UnknownInstanceType
from effopt.spot.risk import Hazard, advisor_hazard


@pytest.fixture(scope="module")
def cat() -> SnapshotCatalog:
    return SnapshotCatalog.load()


def test_advisor_band_to_hourly_hazard():
    assert advisor_hazard(advisor_band(0)).per_hour == pytest.approx(-math.log(1 - 0.025) / 730)
    assert advisor_hazard(advisor_band(4)).per_hour == pytest.approx(-math.log(1 - 0.60) / 730)


def test_v100_job_goes_to_the_cheapest_spot_pools_with_figures(cat):
    job = JobSpec(48, vcpus=8, memory_gib=61, gpus=1, gpu_models=("V100",), deadline_hours=60)
    p = choose(job, cat)
    assert p.capacity == "spot" and p.primary.instance_type == "p3.2xlarge" and p.primary.region == "us-east-1"
    # p3.2xlarge us-east-1 is advisor band 4 (>20%): lambda = -ln(0.4)/730; T = (C + d) / (1 - lambda d)
    lam = -math.log(0.4) / 730
    runtime = 48.2 / (1 - lam * 0.2)
    assert p.primary.expected_runtime_h == pytest.approx(runtime)
    assert p.primary.expected_restarts == pytest.approx(lam * runtime)
    assert p.primary.cost_per_useful_hour == pytest.approx(0.3237 * runtime / 48)  # use1-az5, the cheapest
    assert [o.az_id for o in p.pools] == ["use1-az5", "use1-az1", "use1-az6"]  # equal hazard: cheapest first
    assert p.fallback.capacity == "on-demand" and p.fallback.price.usd_per_hour == 3.06
    assert any("expected restarts" in r for r in p.reasons)
    assert all(o.spec.gpu_count >= 1 and o.spec.gpu_model == "V100" for o in p.ranked)
    json.dumps(p.as_dict(), allow_nan=False)


def test_observed_hazard_and_checkpoints_enter_the_expected_runtime(cat):
    job = JobSpec(10, gpus=1, gpu_models=("V100",), deadline_hours=20, changeover_hours=0.2, checkpoint_hours=1.0,
                  regions=("us-east-1",))
    p = choose(job, cat, observed={"use1-az5": Hazard(0.5, "observed")})
    az5 = next(o for o in p.ranked if o.az_id == "use1-az5" and o.instance_type == "p3.2xlarge")
    runtime = (10 + 0.2) / (1 - 0.5 * (0.2 + 0.5))  # per restart: d + k/2
    assert az5.expected_runtime_h == pytest.approx(runtime) and az5.expected_restarts == pytest.approx(0.5 * runtime)
    never = choose(job, cat, observed={"use1-az5": Hazard(2.0, "observed")})
    az5 = next(o for o in never.ranked if o.az_id == "use1-az5" and o.instance_type == "p3.2xlarge")
    assert not az5.eligible and az5.expected_runtime_h is None and "never let it finish" in " ".join(az5.reasons)


def test_a_short_job_whose_slack_cannot_take_a_restart_goes_on_demand(cat):
    # slack D - C - d = 0.1 h < d + k = 0.2 h: spot is not eligible, by restart cost (not by length).
    p = choose(JobSpec(1, gpus=1, gpu_models=("V100",), deadline_hours=1.3), cat)
    assert p.capacity == "on-demand" and p.primary.instance_type == "p3.2xlarge" and p.fallback is None
    assert "slack 0.10 h < one restart" in " ".join(p.reasons)
    # the same hour of work with room for a restart does use spot
    assert choose(JobSpec(1, gpus=1, gpu_models=("V100",), deadline_hours=1.5), cat).capacity == "spot"


def test_spot_loses_when_restarts_make_it_dearer_than_on_demand(cat):
    job = JobSpec(10, gpus=1, gpu_models=("V100",), regions=("us-east-1",), instance_types=("p3.2xlarge",),
                  checkpoint_hours=2.0)
    observed = {z: Hazard(0.99, "observed") for z in ("use1-az1", "use1-az2", "use1-az5", "use1-az6")}
    p = choose(job, cat, observed=observed)
    # T = 10.2 / (1 - 0.99 * 1.2) < 0: never finishes -> on-demand
    assert p.capacity == "on-demand"


@pytest.mark.parametrize("kwargs, err, text", [
    (dict(hours=48, deadline_hours=40), SpotError, "deadline_hours = 40 is shorter than its work"),
    (dict(hours=4, changeover_hours=-0.5), SpotError, "changeover_hours (d) = -0.5 must not be negative"),
    (dict(hours=4, instance_types=("p9.huge",)), UnknownInstanceType, "unknown instance type 'p9.huge'"),
    (dict(hours=4, gpus=1, gpu_models=("TPU",)), SpotError, "no instance type in the catalog meets"),
])
def test_bad_input_names_the_item(cat, kwargs, err, text):
    with pytest.raises(err) as e:
        choose(JobSpec(**kwargs), cat)
    assert text in str(e.value)
