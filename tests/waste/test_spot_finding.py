"""The "could run on spot" finding: DAG tasks whose history and deadline allow spot, priced with the catalog.

The catalog here is a hand-made one in the embedded catalog's layout (one instance type, one zone, Spot Instance
Advisor band 0), so the money can be computed by hand with the model of :mod:`effopt.spot.choose`:
a run of C hours with changeover d and no checkpoint inside it (k = C) takes T = C + d on-demand and
T = (C + d) / (1 - lambda (d + k/2)) on spot, lambda = -ln(1 - 0.025) / 730 per hour for band 0 (<5%).
"""

from __future__ import annotations

import math

from effopt.spot import SnapshotCatalog
from effopt.store import TaskUsageRecord
from effopt.waste import WasteSettings, analyze
from effopt.waste.detectors import could_run_on_spot, spot_jobs_from_usage
from effopt.waste.render import render_html
from tests.waste.conftest import GIB, T0, rate_table

OD, SPOT = 0.10, 0.03
CATALOG = SnapshotCatalog({
    "schema": 1, "snapshots": ["s1"], "instance_types": {
        "m5.large": {"vcpus": 2, "memory_gib": 8, "gpu_model": None, "gpu_count": 0, "gpu_memory_mib": None,
                     "on_demand": {"us-east-1": OD}, "spot": {"us-east-1": {"use1-az1": [SPOT]}},
                     "advisor": {"us-east-1": {"band": 0, "savings_pct": 70}}}}})


def _records(n: int = 10, wall_s: float = 3600.0, state: str = "success", task: str = "fit",
             every_s: float = 86400.0) -> list[TaskUsageRecord]:
    """A task run every ``every_s`` (a day), ``n`` times, ``wall_s`` seconds each, 1.5 cores busy, 3 GiB peak."""
    return [TaskUsageRecord("train", task, f"r{i}", -1, 1, "h", 1, T0 + i * every_s, T0 + i * every_s + wall_s,
                            wall_s, 1.5 * wall_s, 0.0, 1.5 * wall_s, 3 * GIB, GIB, "span", state) for i in range(n)]


def test_a_daily_task_that_fits_spot_is_priced_with_the_catalog():
    (job,) = spot_jobs_from_usage(_records())
    assert job.workload == "train/fit" and job.hours == 1.0 and job.successes == 10
    assert math.isclose(job.runs_per_month, 10 / (9 * 24 + 1) * 730)  # 10 runs over 9 days and 1 hour
    assert job.vcpus == 1.5 and job.memory_gib == 3.0
    (finding,) = could_run_on_spot(job, CATALOG)
    hazard = -math.log(1 - 0.025) / 730
    c, d = 1.0, 0.2
    on_demand = OD * (c + d)
    spot = SPOT * (c + d) / (1 - hazard * (d + c / 2))
    assert math.isclose(finding.evidence["saving_per_run"], on_demand - spot, rel_tol=1e-5)
    assert math.isclose(finding.monthly_waste, (on_demand - spot) * job.runs_per_month, rel_tol=1e-5)
    assert finding.kind == "could_run_on_spot" and finding.severity == "warning"  # 70% cheaper
    assert finding.evidence["spot"]["offering"] == "m5.large spot us-east-1/use1-az1"
    assert finding.advice.values["fallback"] == "m5.large on-demand us-east-1/*"


def test_the_deadline_and_the_history_decide():
    (job,) = spot_jobs_from_usage(_records(), deadlines={"train/fit": 1.3})
    assert job.deadline_hours == 1.3
    # Slack 1.3 - 1 - 0.2 = 0.1 h cannot absorb a restart (d + k = 1.2 h): on-demand, no finding.
    assert could_run_on_spot(job, CATALOG) == []
    (roomy,) = spot_jobs_from_usage(_records(), deadlines={"train/fit": 5.0})
    assert len(could_run_on_spot(roomy, CATALOG)) == 1
    assert spot_jobs_from_usage(_records(n=2)) == []  # two runs are no history
    assert spot_jobs_from_usage(_records(state="failed")) == []
    # A task shorter than one changeover (36 s < 0.2 h) is no candidate, however often it runs.
    (tiny,) = spot_jobs_from_usage(_records(n=200, wall_s=36.0, task="tiny"))
    assert tiny.hours < 0.2 and could_run_on_spot(tiny, CATALOG) == []
    # One that is long enough but saves less than a dollar a month is not reported either.
    (rare,) = spot_jobs_from_usage(_records(n=3, wall_s=900.0, task="rare", every_s=5 * 86400))
    on_demand, spot = OD * (0.25 + 0.2), SPOT * (0.25 + 0.2)
    assert (on_demand - spot) * rare.runs_per_month < 1.0 and could_run_on_spot(rare, CATALOG) == []
    assert len(could_run_on_spot(rare, CATALOG, min_monthly_usd=0.1)) == 1


def test_the_finding_is_in_the_report_totals_and_its_rendering():
    jobs = spot_jobs_from_usage(_records())
    report = analyze([], rate_table(), settings=WasteSettings(), spot_jobs=jobs, spot_catalog=CATALOG)
    (finding,) = report.findings
    totals = report.totals()
    assert totals["by_kind"]["could_run_on_spot"] == round(finding.monthly_waste, 4)
    html = render_html(report, {}, title="t", period_start=T0, period_end=T0 + 86400)
    assert "could_run_on_spot" in html and "train/fit" in html and "run on spot: m5.large" in html
