"""HTML email rendering: charts decode, the HTML parses and uses inline styles, the MIME parts match."""

from __future__ import annotations

import base64
import csv
import gzip
import io
import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from effopt.cli import main
from effopt.metrics import make_series
from effopt.waste import Advice, Finding, WasteReport, WorkloadUsage, analyze
from effopt.waste.cost import ResourceCost
from effopt.waste.render import (
    CHARTS,
    CSV_FILENAME,
    MAX_BARS,
    build_message,
    chart_cid,
    render_charts,
    render_html,
    usage_series,
)
from tests.waste.conftest import GIB, T0, times

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}
START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 1, 2, tzinfo=UTC)


class _Html(HTMLParser):
    """Collects tags, attributes and text, and checks that elements nest and close properly."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Html:
    p = _Html()
    p.feed(html)
    p.close()
    assert not p.errors and not p.stack, (p.errors, p.stack)
    return p


def _workloads() -> list[WorkloadUsage]:
    t = times(48)  # 2 days of 5-minute samples
    rng = np.random.default_rng(7)
    big = WorkloadUsage("ns/big-api", "app",
                        cpu=make_series("ns/big-api", "app", "cpu", t, 0.2 + 0.05 * rng.random(t.size), request=4.0),
                        memory=make_series("ns/big-api", "app", "memory", t, np.full(t.size, 1.0 * GIB),
                                           request=8.0 * GIB))
    gpu = WorkloadUsage("ml/trainer", "worker",
                        gpu_util=make_series("ml/trainer", "worker", "gpu_util", t,
                                             np.where(np.arange(t.size) % 24 == 0, 50.0, 0.0)),
                        gpu_model="A10G")
    odd = WorkloadUsage("<script>alert(1)</script>", "c&d",
                        cpu=make_series("<script>alert(1)</script>", "c&d", "cpu", t, np.full(t.size, 0.1),
                                        request=1.0))
    unpriced = WorkloadUsage("ml/h100", "w",
                             gpu_util=make_series("ml/h100", "w", "gpu_util", t, np.zeros(t.size)), gpu_model="H100")
    return [big, gpu, odd, unpriced]


@pytest.fixture(scope="module")
def analysed() -> tuple[WasteReport, list[WorkloadUsage]]:
    from tests.waste.conftest import rate_table

    ws = _workloads()
    return analyze(ws, rate_table()), ws


@pytest.fixture(scope="module")
def charts(analysed) -> dict[str, bytes]:
    report, ws = analysed
    return render_charts(report, ws)


def _decode(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_SIGNATURE)
    img = imread(io.BytesIO(png), format="png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] >= 500
    assert float(img[..., :3].std()) > 0.01  # something was drawn, not a blank canvas
    return img


def test_all_charts_drawn_and_decode(charts):
    assert list(charts) == list(CHARTS)
    for png in charts.values():
        _decode(png)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        return
    for png in charts.values():
        with Image.open(io.BytesIO(png)) as im:
            im.verify()


def test_charts_without_series_or_waste_are_omitted(analysed):
    report, _ = analysed
    assert list(render_charts(report)) == ["top_wasters"]  # no series: usage and heatmap left out
    cpu_only = [w for w in analysed[1] if w.gpu_util is None]
    assert "gpu_idle_heatmap" not in render_charts(report, cpu_only)  # idle GPUs but not their series
    empty = WasteReport([], [], 0)
    assert render_charts(empty, []) == {}


def test_usage_mapping_form_is_accepted(analysed):
    report, ws = analysed
    mapping = {k: (ts, vals, req) for k, (ts, vals, req) in usage_series(ws).items()}
    assert set(render_charts(report, mapping)) == set(CHARTS)
    with pytest.raises(ValueError, match="one length"):
        usage_series({("w", "c", "cpu"): ([1.0, 2.0], [1.0], None)})


def test_html_parses_with_inline_styles_and_content(analysed, charts):
    report, _ = analysed
    html = render_html(report, charts, title="Weekly waste", period_start=START, period_end=END)
    p = _parse(html)
    names = {tag for tag, _ in p.tags}
    assert not names & {"link", "script"}
    # Inline styles do the layout; one style block only tightens it on phones (@media), for the mail clients
    # that read it, through the few classes it names.
    (block,) = re.findall(r"<style>(.*?)</style>", html, flags=re.S)
    assert re.sub(r"/\*.*?\*/", "", block, flags=re.S).strip().startswith("@media only screen and (max-width: 480px)")
    classes = {attrs["class"] for _, attrs in p.tags if "class" in attrs}
    assert classes <= {"outer", "pad", "big", "cell"} and all(f".{c}" in block for c in classes)
    assert all(attrs.get("style") for tag, attrs in p.tags
               if tag in {"body", "table", "td", "th", "img", "p", "h1", "h2"})
    text = " ".join(" ".join(p.text).split())
    for w in report.top_wasters():
        assert w["workload"] in text
    t = report.totals()
    assert f"{t['cost']:,.2f} USD" in text and f"{t['waste']:,.2f} USD" in text and f"{t['waste_pct']:.1f}%" in text
    assert "2026-01-01 00:00 UTC to 2026-01-02 00:00 UTC" in text
    assert "idle_gpu" in text and "over_provisioned" in text
    srcs = [attrs["src"] for tag, attrs in p.tags if tag == "img"]
    assert sorted(srcs) == sorted(f"cid:{chart_cid(n)}" for n in CHARTS)
    widths = [int(str(attrs["width"])) for tag, attrs in p.tags if tag == "table" and attrs.get("width", "").isdigit()]
    assert widths and max(widths) <= 640


def test_unpriced_finding_shows_price_missing_not_zero(analysed, charts):
    report, _ = analysed
    unpriced = [f for f in report.findings if f.monthly_waste is None]
    assert unpriced and unpriced[0].workload == "ml/h100"
    text = " ".join(" ".join(_parse(render_html(report, charts, title="t", period_start=START,
                                                period_end=END)).text).split())
    assert f"price missing: {unpriced[0].missing[0]}" in text
    # the finding's cell ("idle_gpu , critical <container>"), then its waste
    row = re.search(r"idle_gpu\s*,\s*\w+\s+\S+\s+(.{0,40})", text[text.index("ml/h100 (workload)"):])
    assert row is not None and row.group(1).startswith("price missing") and "0.00 USD" not in row.group(1)


def test_script_workload_is_escaped(analysed, charts):
    report, _ = analysed
    html = render_html(report, charts, title="<b>t</b>", period_start="<i>", period_end="x")
    assert "<script>" not in html and "<b>t</b>" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "c&amp;d" in html
    p = _parse(html)
    assert "script" not in {tag for tag, _ in p.tags}
    assert "<script>alert(1)</script>" in "".join(p.text)


def test_empty_report_renders_without_charts():
    empty = WasteReport([], [], 0)
    charts = render_charts(empty)
    html = render_html(empty, charts, title="Nothing", period_start=START, period_end=END)
    p = _parse(html)
    assert not [t for t, _ in p.tags if t == "img"]
    text = " ".join(p.text)
    assert "No chart" in text and "No finding: nothing to act on" in text and "n/a" in text
    assert "no usage observed" in text
    msg = build_message(empty, subject="s", sender="a@example.com", recipients=["b@example.com"], html=html,
                        charts=charts, csv_text=empty.to_csv())
    assert [part.get_content_type() for part in msg.walk() if part.get_content_maintype() == "image"] == []


def test_trend_against_previous(analysed, charts):
    report, _ = analysed
    previous = report.to_json()
    previous["totals"] = {**previous["totals"], "waste": previous["totals"]["waste"] + 10.0}
    previous["findings"] = previous["findings"][1:] + [{"kind": "idle", "workload": "gone", "container": "c",
                                                         "resource": "cpu"}]
    text = " ".join(" ".join(_parse(render_html(report, charts, title="t", period_start=START, period_end=END,
                                                previous=previous)).text).split())
    assert "Trend against the previous report" in text and "-10.00 USD" in text
    assert "1 new and 1 resolved finding(s)" in text
    no_trend = render_html(report, charts, title="t", period_start=START, period_end=END)
    assert "Trend against" not in no_trend


def _message(report: WasteReport, charts: dict[str, bytes], **kw) -> EmailMessage:
    html = render_html(report, charts, title="Weekly waste", period_start=START, period_end=END)
    return build_message(report, subject="Waste 2026-W01", sender="effopt@example.com",
                         recipients=["ops@example.com", "fin@example.com"], html=html, charts=charts,
                         csv_text=report.to_csv(), **kw)


def test_message_structure_cids_and_csv(analysed, charts):
    report, _ = analysed
    raw = _message(report, charts, message_id="waste-2026-W01@effopt").as_bytes()
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == "Waste 2026-W01" and msg["Message-ID"] == "<waste-2026-W01@effopt>"
    assert msg["To"].addresses[0].addr_spec == "ops@example.com" and len(msg["To"].addresses) == 2
    assert msg.get_content_type() == "multipart/mixed"
    alt = msg.get_payload()[0]
    assert alt.get_content_type() == "multipart/alternative"
    plain, related = alt.get_payload()
    assert plain.get_content_type() == "text/plain" and "ns/big-api" in plain.get_content()
    assert related.get_content_type() == "multipart/related"
    html = related.get_payload()[0].get_content()
    images = {part["Content-ID"].strip("<>"): part.get_content() for part in related.get_payload()[1:]}
    referenced = set(re.findall(r'src="cid:([^"]+)"', html))
    assert referenced == set(images) == {chart_cid(n) for n in charts}
    for png in images.values():
        _decode(png)
    attachments = list(msg.iter_attachments())
    assert [a.get_filename() for a in attachments] == [CSV_FILENAME]
    rows = list(csv.DictReader(io.StringIO(attachments[0].get_content())))
    assert len(rows) == len(report.findings)
    assert sorted(r["kind"] for r in rows) == sorted(f.kind for f in report.findings)
    assert {r["workload"] for r in rows} == {f.workload for f in report.findings}
    unpriced = [r for r in rows if r["workload"] == "ml/h100"]
    assert unpriced and unpriced[0]["monthly_waste"] == "" and "H100" in unpriced[0]["missing_prices"]


def test_message_id_is_deterministic_only_when_given(analysed, charts):
    report, _ = analysed
    a = _message(report, charts, message_id="<p@effopt>")
    b = _message(report, charts, message_id="p@effopt")
    assert a["Message-ID"] == b["Message-ID"] == "<p@effopt>"
    assert _message(report, charts)["Message-ID"] != _message(report, charts)["Message-ID"]
    with pytest.raises(ValueError, match="recipients"):
        build_message(report, subject="s", sender="a@example.com", recipients=[" "], html="", charts={},
                      csv_text="")


def _synthetic(n: int) -> tuple[WasteReport, dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray, float]]]:
    """``n`` workloads x 7 days of 5-minute samples, built directly (no detectors) to time rendering alone."""
    t = T0 + 300.0 * np.arange(7 * 288)
    rng = np.random.default_rng(1)
    costs, findings, usage = [], [], {}
    for i in range(n):
        w = f"ns{i % 9}/svc-{i:04d}"
        waste = 500.0 / (1 + i)  # distinct wastes: the bars of the top wasters chart differ
        costs.append(ResourceCost(w, "c", "cpu", waste * 2, waste, waste, 168.0))
        findings.append(Finding("over_provisioned", w, "c", "cpu", "warning", {}, Advice("lower the request"), waste))
        usage[(w, "c", "cpu")] = (t, rng.random(t.size), 2.0)
        if i % 5 == 0:
            findings.append(Finding("idle_gpu", w, "c", "gpu", "critical", {"idle_share": 0.9},
                                    Advice("release the GPU"), waste / 2))
            usage[(w, "c", "gpu_util")] = (t, np.where(rng.random(t.size) < 0.9, 0.0, 80.0), None)
    return WasteReport(costs, findings, n), usage


def test_rendering_1000_workloads_is_capped():
    report, usage = _synthetic(1000)
    charts = render_charts(report, usage)  # its time is measured in bench/waste_bench.py, not asserted here
    html = render_html(report, charts, title="t", period_start=START, period_end=END)
    assert set(charts) == set(CHARTS)
    assert html.count("(workload)") == report.top  # the table lists the top wasters only
    small, small_usage = _synthetic(MAX_BARS)
    big_img = _decode(charts["top_wasters"])
    assert big_img.shape == _decode(render_charts(small, small_usage)["top_wasters"]).shape  # bars capped


def _write_trace(path: Path, name: str, rows: list[tuple[float, str, float]]) -> None:
    with gzip.open(path / name, "wt", encoding="utf-8") as fh:
        fh.write("timestamp_anon,container_ip,value\n")
        fh.writelines(f"{t:.0f},{c},{v}\n" for t, c, v in rows)


def test_cli_writes_html_with_data_uris(tmp_path: Path, capsys):
    t = 1000.0 + 60.0 * np.arange(600)
    _write_trace(tmp_path, "pod_memory_util.csv.gz", [(x, "small", 0.1) for x in t] + [(x, "full", 0.95) for x in t])
    _write_trace(tmp_path, "pod_gpu_duty_cycle.csv.gz", [(x, "small", 0.0) for x in t] + [(x, "full", 70.0) for x in t])
    out = tmp_path / "report.html"
    assert main(["waste", "report", "--path", str(tmp_path), "--gpu-model", "A10G", "--json",
                 "--html", str(out)]) == 0
    assert '"totals"' in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    p = _parse(html)
    srcs = [attrs["src"] or "" for tag, attrs in p.tags if tag == "img"]
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs) and "cid:" not in html
    for s in srcs:
        _decode(base64.b64decode(s.split(",", 1)[1]))
    assert "idle_gpu" in " ".join(p.text)


def test_period_bounds_accept_epoch_seconds_and_open_start():
    empty = WasteReport([], [], 0)
    text = " ".join(_parse(render_html(empty, {}, title="t", period_start=None, period_end=T0 + 86400.0)).text)
    assert "Period: the start of the data to 2026-01-02 00:00 UTC" in " ".join(text.split())


def test_top_wasters_that_look_alike_get_a_sentence_not_a_chart():
    t = T0 + 300.0 * np.arange(288)
    costs = [ResourceCost(f"ns/svc-{i}", "c", "cpu", 200.0, 100.0 - 0.5 * i, 100.0 + 0.5 * i, 24.0) for i in range(4)]
    findings = [Finding("over_provisioned", c.workload, "c", "cpu", "warning", {}, Advice("lower the request"),
                        c.waste) for c in costs]
    report = WasteReport(costs, findings, 4)
    usage = {(c.workload, "c", "cpu"): (t, np.full(t.size, 0.5), 2.0) for c in costs}
    charts = render_charts(report, usage)
    assert "top_wasters" not in charts and "usage_vs_request" in charts  # 100.0 to 101.5 USD: 1.5% apart
    text = " ".join(_parse(render_html(report, charts, title="t", period_start=START, period_end=END)).text)
    assert "No chart: the 4 top wasters each waste about 101.50 USD a month." in " ".join(text.split())
    costs[0] = ResourceCost("ns/svc-0", "c", "cpu", 200.0, 50.0, 150.0, 24.0)  # now one stands out
    assert "top_wasters" in render_charts(WasteReport(costs, findings, 4), usage)
