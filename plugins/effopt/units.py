"""Unit constants, defined once for the whole package (plain Python, no imports)."""

from __future__ import annotations

KIB = 1024
MIB = 1024**2
GIB = 1024**3
TIB = 1024**4

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
WEEK = 7 * DAY
HOURS_PER_MONTH = 730.0  # the cloud providers' month (8,760 h / 12)


def format_bytes(n: float) -> str:
    """``1.2 GiB``, ``512 MiB``, ``800 B``: binary units, as Kubernetes quantities and dashboards show memory."""
    for unit, size in (("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"
    return f"{n:.0f} B"


def format_cores(cores: float) -> str:
    """``2 cores``, ``1.5 cores``, ``250m`` (millicores below one core)."""
    if abs(cores) < 1:
        return f"{cores * 1000:.0f}m"
    text = f"{cores:.2f}".rstrip("0").rstrip(".")
    return f"{text} core" if text == "1" else f"{text} cores"


def format_quantity(value: float, unit: str) -> str:
    """A value in one of effopt's series units (``bytes``, ``cores``, ``percent``, ...) as a person reads it."""
    if unit == "bytes":
        return format_bytes(value)
    if unit == "cores":
        return format_cores(value)
    if unit == "percent":
        return f"{value:.1f}%"
    return f"{value:.4g} {unit}"


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``23 h``, ``3.5 days``."""
    if seconds < 2 * MINUTE:
        return f"{seconds:.0f} s"
    if seconds < 2 * HOUR:
        return f"{seconds / MINUTE:.0f} min"
    if seconds < 2 * DAY:
        return f"{seconds / HOUR:.0f} h"
    return f"{seconds / DAY:.1f} days"
