"""The effopt dashboard as a person sees it: headless Chromium logs in through Airflow's form, opens "effopt"
from the UI's navigation, and reads the page in its frame.  Screenshots land in ``test-artifacts/``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import artifact, layout

pytestmark = pytest.mark.slow
TRACE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "alibaba-genai-2026"


@pytest.fixture(scope="module")
def dashboard_data(airflow):
    """Usage, a right-sizing plan and a waste report (from the real GenAI trace) for the page to show."""
    if not TRACE.is_dir():
        pytest.skip(f"{TRACE} (the Alibaba GenAI trace) is not here")
    client = airflow.client
    client.run_dag("effopt_selftest", conf={"megabytes": 60, "cpu_seconds": 0.2})  # two tries per task: sparklines
    runs = {"effopt_selftest": client.run_dag("effopt_selftest", conf={"megabytes": 100, "cpu_seconds": 0.3}),
            "effopt_cache_example": client.run_dag("effopt_cache_example"),
            "effopt_rightsizing": client.run_dag("effopt_rightsizing", conf={"source": "airflow"}),
            "effopt_waste_report": client.run_dag("effopt_waste_report", conf={
                "source": "trace", "path": str(TRACE), "recipients": []}, timeout=400)}
    for dag_id, (run_id, state) in runs.items():
        assert state == "success", client.failure_report(dag_id, run_id)
    return runs


def _login(page, airflow) -> None:
    page.goto(airflow.url + "/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(airflow.standalone.admin_password())
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="effopt").wait_for(timeout=60_000)


def test_dashboard_from_the_navigation_shows_usage_waste_plan_and_cache(browser, airflow, dashboard_data):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        _login(page, airflow)
        page.get_by_role("link", name="effopt").click()
        page.wait_for_url("**/plugin/effopt", timeout=30_000)
        frame = page.frame_locator("iframe").first
        frame.get_by_role("heading", name="Waste report").wait_for(timeout=60_000)
        page.screenshot(path=str(artifact("effopt-page-in-ui.png")), full_page=True)
        body = frame.locator("body")
        text = body.inner_text()
        for heading in ("Waste report", "Right-sizing recommendations", "Measured task usage (last 30 days)",
                        "Computation cache", "Right-sizing changes applied (last 30 days)"):
            assert heading in text, heading
        assert "allocate_and_burn" in text and "effopt_cache_example.build_features" in text
        assert "unusual_prefix_" not in text  # readable function names
        assert "observed, scaled to a month" in text and "not emailed: no recipients" in text
        # Links go to Airflow's own pages, in the whole window.
        task = frame.get_by_role("link", name="allocate_and_burn").first
        assert task.get_attribute("href") == "/dags/effopt_selftest/tasks/allocate_and_burn"
        assert task.get_attribute("target") == "_top"
        assert frame.locator("svg.spark").count() >= 2  # sparklines of peak RSS and CPU per task
        # The page fits the frame at 1,280 px: nothing scrolls sideways.
        inner = page.frames[-1]
        box = layout(inner)
        assert box["scroll_width"] <= box["viewport"], box
        # The full report, linked from the page, is the rendered email.
        href = frame.get_by_role("link", name="Full report").get_attribute("href")
        assert href is not None and href.startswith("/effopt/reports/waste/")
        page.goto(airflow.url + href)
        assert "Waste by kind" in page.inner_text("body")
    finally:
        context.close()

    # The page on its own, for the README.
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    try:
        _login(page, airflow)
        page.goto(airflow.url + "/effopt/")
        page.screenshot(path=str(artifact("effopt-page.png")), full_page=True)
    finally:
        page.context.close()


def test_pages_need_a_login(browser, airflow):
    page = browser.new_page()
    try:
        for path in ("/effopt/", "/effopt/api/waste", "/effopt/reports/waste/latest"):
            response = page.goto(airflow.url + path)
            assert response is not None and response.status == 401, path
    finally:
        page.close()
