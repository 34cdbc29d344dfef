"""Headless Chromium through Playwright, for tests that look at pages and emails as a person would.

Playwright comes from PyPI and drives Debian's ``chromium`` (``executable_path``): nothing is downloaded at
test time.  Screenshots go to ``test-artifacts/`` in the repo (ignored by git), where CI keeps them and a
developer looks at them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
#: What the machine's probe found needed on a closed network (no background connections, no sandbox as root).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


def layout(page) -> dict:
    """Widths a layout check needs: the viewport, the document, and the widest element's right edge."""
    return page.evaluate(
        """() => {
            const vw = document.documentElement.clientWidth;
            let right = 0, widest = '';
            for (const el of document.body.querySelectorAll('*')) {
                const r = el.getBoundingClientRect();
                if (r.width > 0 && r.right > right) { right = r.right; widest = el.tagName + '.' + el.className; }
            }
            return {viewport: vw, scroll_width: document.documentElement.scrollWidth, right: right, widest: widest,
                    images: [...document.images].map(i => ({w: i.getBoundingClientRect().width,
                                                            right: i.getBoundingClientRect().right,
                                                            loaded: i.complete && i.naturalWidth > 0}))};
        }"""
    )
