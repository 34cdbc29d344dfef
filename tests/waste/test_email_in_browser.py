"""The emailed waste report, rendered in a real browser (headless Chromium) at a mail client's 640 px and at
phone width: nothing is cut off or scrolls sideways, every chart loads and fits, and the summary says what
the monthly figures are extrapolated from.  Screenshots land in ``test-artifacts/``."""

from __future__ import annotations

from pathlib import Path

import pytest

from effopt.prices import load_rate_table
from effopt.waste import TraceAssumptions, workloads_from_trace
from effopt.waste.service import build_report
from tests.browser import artifact, layout

TRACE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "alibaba-genai-2026"
GIB = 1024**3


@pytest.fixture(scope="module")
def email_html(tmp_path_factory):
    if not TRACE.is_dir():
        pytest.skip(f"{TRACE} (the Alibaba GenAI trace) is not here")
    assumptions = TraceAssumptions(16 * GIB, "A100", 1.0)
    rendered = build_report(workloads_from_trace(TRACE, assumptions), load_rate_table(None),
                            assumptions=assumptions.describe(), title="effopt waste report")
    path = tmp_path_factory.mktemp("email") / "report.html"
    path.write_text(rendered.html_page)
    return path, rendered


@pytest.mark.parametrize("width", [640, 375])
def test_email_layout_fits_a_mail_client_and_a_phone(browser, email_html, width):
    path, rendered = email_html
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        page.goto(path.as_uri())
        page.screenshot(path=str(artifact(f"waste-email-{width}px.png")), full_page=True)
        box = layout(page)
        assert box["scroll_width"] <= width, f"scrolls sideways at {width} px: widest {box['widest']}"
        assert box["right"] <= width + 0.5, box
        assert box["images"] and all(i["loaded"] and i["right"] <= width + 0.5 for i in box["images"]), box["images"]
        text = page.inner_text("body")
    finally:
        page.close()
    assert "observed, scaled to a month (730 h)" in text
    assert "No finding;" not in text and "bytes" not in text.replace("GiB", "")  # human units, rows with findings
    assert "/" not in rendered.report.rate_table.split(":")[0]
    assert "7g.40gb" not in text
    assert "top_wasters" not in rendered.charts and "each waste about" in text  # 15 bars within 5%: a sentence
