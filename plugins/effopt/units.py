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
