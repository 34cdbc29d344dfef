"""effopt_waste_report in a real Airflow: REST-triggered on real trace data, emailed to a real SMTP server."""

from __future__ import annotations

import csv
import io
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from effopt.store import EffoptStore

pytestmark = pytest.mark.slow

DAG = "effopt_waste_report"
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "alibaba-genai-2026"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trace_dir():
    if not DATA.is_dir():
        pytest.skip(f"real trace data not found at {DATA} (see ../shared/data/README.md)")
    return str(DATA)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parts(msg):
    html = next(p for p in msg.walk() if p.get_content_type() == "text/html").get_content()
    images = {p["Content-ID"].strip("<>"): p.get_payload(decode=True) for p in msg.walk()
              if p.get_content_maintype() == "image"}
    (csv_part,) = [p for p in msg.walk() if p.get_filename() == "waste_findings.csv"]
    return html, images, csv_part.get_payload(decode=True).decode()


def test_weekly_report_is_emailed_once_with_charts_and_csv(airflow, smtp_server, trace_dir):
    client = airflow.client
    conf = {"recipients": ["team@example.com", "ml-platform@example.com"], "path": trace_dir, "period": "e2e-week"}
    run_id, state = client.run_dag(DAG, conf)
    assert state == "success", client.failure_report(DAG, run_id)

    (msg,) = smtp_server.messages
    assert msg["Subject"] == "effopt waste report e2e-week"
    assert set(msg["X-Envelope-To"].split(", ")) == {"team@example.com", "ml-platform@example.com"}
    html, images, csv_text = _parts(msg)
    parser = _Text()
    parser.feed(html)  # parses
    summary = client.xcom(DAG, run_id, "detect")["summary"]
    top = summary["top_wasters"][0]["workload"]
    assert top in html
    assert images and all(data.startswith(PNG) for data in images.values())
    from matplotlib.image import imread

    for data in images.values():
        assert imread(io.BytesIO(data), format="png").shape[0] > 100  # decodes as a real image
    for cid in images:
        assert f"cid:{cid}" in html
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert len(rows) == len(summary["findings"])
    assert {r["kind"] for r in rows} == {f["kind"] for f in summary["findings"]}
    assert summary["totals"]["by_kind"]["idle_gpu"] > 0  # the trace's GPUs mostly sit idle

    # The XCom summary is the JSON report the library (and `python -m effopt waste report --json`) gives.
    from effopt.prices import load_rate_table
    from effopt.waste import TraceAssumptions, WasteSettings, analyze, workloads_from_trace

    assumptions = TraceAssumptions()
    from effopt.waste.cost import fleet_daily_costs

    workloads = workloads_from_trace(trace_dir, assumptions)
    rates = load_rate_table(None)
    local = analyze(workloads, rates, settings=WasteSettings(recommender="krr"), assumptions=assumptions.describe(),
                    daily_costs={"*": fleet_daily_costs(workloads, rates)}).to_json(None)
    # (The DAG also reads the live cache statistics; this session's cache tests may add cache findings.)
    assert [f for f in summary["findings"] if f["kind"] != "cache_inefficiency"] == local["findings"]
    for key in ("workloads", "cost"):
        assert summary["totals"][key] == local["totals"][key]
    assert {k: v for k, v in summary["totals"]["by_kind"].items() if k != "cache_inefficiency"} == \
        {k: v for k, v in local["totals"]["by_kind"].items() if k != "cache_inefficiency"}

    # The same period again: the email task succeeds without sending a second copy.
    again, state = client.run_dag(DAG, conf)
    assert state == "success", client.failure_report(DAG, again)
    assert len(smtp_server.messages) == 1
    assert client.xcom(DAG, again, "email")["already_sent"] is True


def test_smtp_outage_retries_and_records_nothing_until_accepted(airflow, smtp_server, trace_dir):
    client = airflow.client
    smtp_server.fail_with = "451 4.3.0 mail system unavailable, try again later"
    conf = {"recipients": ["team@example.com"], "path": trace_dir, "period": "e2e-outage"}
    client.wait_for_dag(DAG)
    client.unpause(DAG)
    run_id = client.trigger(DAG, conf)
    deadline = time.monotonic() + 240
    while client.task_states(DAG, run_id).get("email") != "up_for_retry":
        assert time.monotonic() < deadline, client.failure_report(DAG, run_id)
        assert client.run_state(DAG, run_id) not in ("success", "failed"), client.failure_report(DAG, run_id)
        time.sleep(1)
    store = EffoptStore(airflow.store_url)
    assert smtp_server.messages == []
    assert store.report_delivery("waste:e2e-outage:team@example.com") is None  # nothing half-sent recorded

    smtp_server.fail_with = None  # the mail server is back: the retry delivers
    assert client.wait_for_run(DAG, run_id) == "success", client.failure_report(DAG, run_id)
    assert len(smtp_server.messages) == 1
    assert store.report_delivery("waste:e2e-outage:team@example.com") is not None
