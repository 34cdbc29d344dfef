"""Small inline SVG charts for the effopt page: no script, no external file, readable in any browser."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence


def sparkline(values: Sequence[float | None], *, width: int = 120, height: int = 26, color: str = "#1f618d",
              title: str = "", marks: Sequence[bool] = ()) -> str:
    """A line through ``values`` (oldest first) scaled to the box, its last point dotted.

    ``marks`` (same length) draws a red dot on the points it flags (e.g. failed tries).  Fewer than two
    finite values draw nothing but the title (so the cell says why it is empty).
    """
    points = [(i, float(v)) for i, v in enumerate(values) if v is not None and math.isfinite(float(v))]
    label = html.escape(title)
    if len(points) < 2:
        return f'<span class="muted" title="{label}">{"one try" if points else "no data"}</span>'
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    span = hi - lo or 1.0
    n = max(len(values) - 1, 1)
    pad = 2.0

    def xy(i: int, v: float) -> tuple[float, float]:
        return pad + (width - 2 * pad) * i / n, height - pad - (height - 2 * pad) * (v - lo) / span

    coords = [xy(i, v) for i, v in points]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="#c0392b"/>'
                   for (i, v), (x, y) in zip(points, coords, strict=True) if i < len(marks) and marks[i])
    lx, ly = coords[-1]
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{label}"><title>{label}</title>'
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{line}"/>{dots}'
            f'<circle cx="{lx:.1f}" cy="{ly:.1f}" r="2.2" fill="{color}"/></svg>')


def bar(fraction: float | None, *, width: int = 120, color: str = "#2e86c1", title: str = "") -> str:
    """A horizontal bar filled to ``fraction`` (0..1) of ``width``."""
    f = 0.0 if fraction is None or not math.isfinite(fraction) else min(max(fraction, 0.0), 1.0)
    label = html.escape(title)
    return (f'<svg class="bar" width="{width}" height="10" viewBox="0 0 {width} 10" role="img" aria-label="{label}">'
            f'<title>{label}</title><rect width="{width}" height="10" fill="#eaecee"/>'
            f'<rect width="{f * width:.1f}" height="10" fill="{color}"/></svg>')
