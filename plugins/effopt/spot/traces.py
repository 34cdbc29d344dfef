"""Spot availability traces (the skypilot-org/spot-traces layout) and what they mean.

A trace file is ``{"metadata": {"gap_seconds": N}, "data": [v0, v1, ...]}``: one
value per tick of ``gap_seconds``.  **The meaning is pinned here**: ``v`` is the
number of spot instances that could be obtained at that tick, so a job that
needs ``nodes`` instances can run on spot at tick ``i`` iff ``v[i] >= nodes``;
for the 1-node traces ``1`` = available and ``0`` = none could be launched.
This is the spot-traces README's meaning and the collector's; the Can't Be Late
simulator reads the values the other way round (1 = preempted), which
:func:`load_trace` does not.

File names ``<zone>_<gpu>_<count>.json`` (``us-east-1a_v100_1.json``) give the
zone NAME, the accelerator and its count; a name that does not follow the
pattern still loads, with the file stem as zone and no accelerator.  Zone names
map to AZ IDs differently in every AWS account, so a trace's zone is never taken
for an AZ ID.

Files in one folder with the same accelerator are one collection run over
several zones (:func:`group_traces`): they share the tick and are replayed
side by side, tick ``i`` of each meaning the same moment.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from effopt.spot.errors import TraceError
from effopt.units import HOUR

_NAME = re.compile(r"^(?P<zone>.+?)_(?P<gpu>[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)_(?P<count>\d+)$")
_AWS_ZONE = re.compile(r"^(?P<region>[a-z]{2}(?:-gov)?-[a-z]+-\d+)(?P<letter>[a-z])$")
_GCP_ZONE = re.compile(r"^(?P<region>[a-z]+-[a-z]+\d+)-(?P<letter>[a-z])$")


def region_of_zone(zone: str) -> str | None:
    """``us-east-1a`` -> ``us-east-1``; ``us-central1-c`` -> ``us-central1``; otherwise None."""
    m = _AWS_ZONE.match(zone) or _GCP_ZONE.match(zone)
    return m.group("region") if m else None


@dataclass(frozen=True)
class TraceStats:
    """What a trace says about a zone: availability and how often a running instance is lost."""

    ticks: int
    hours: float
    available_fraction: float
    preemptions: int  # available -> unavailable transitions
    preemptions_per_available_hour: float | None  # None when the zone was never available
    mean_available_run_h: float | None
    mean_unavailable_run_h: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"ticks": self.ticks, "hours": self.hours, "available_fraction": self.available_fraction,
                "preemptions": self.preemptions,
                "preemptions_per_available_hour": self.preemptions_per_available_hour,
                "mean_available_run_h": self.mean_available_run_h,
                "mean_unavailable_run_h": self.mean_unavailable_run_h}


def availability_stats(available: np.ndarray, tick_h: float) -> TraceStats:
    a = np.asarray(available, dtype=bool)
    n = int(a.size)
    up = int(a.sum())
    drops = int(np.count_nonzero(a[:-1] & ~a[1:])) if n > 1 else 0
    changes = np.flatnonzero(a[1:] != a[:-1]) + 1
    bounds = np.concatenate(([0], changes, [n]))
    runs = np.diff(bounds)
    states = a[bounds[:-1]] if n else np.array([], dtype=bool)
    up_runs = runs[states]
    down_runs = runs[~states]
    return TraceStats(
        ticks=n, hours=n * tick_h, available_fraction=up / n if n else 0.0, preemptions=drops,
        preemptions_per_available_hour=drops / (up * tick_h) if up else None,
        mean_available_run_h=float(up_runs.mean()) * tick_h if up_runs.size else None,
        mean_unavailable_run_h=float(down_runs.mean()) * tick_h if down_runs.size else None,
    )


@dataclass(frozen=True)
class SpotTrace:
    """One zone's availability series; ``values[i]`` = spot instances obtainable at tick ``i``."""

    path: str
    zone: str
    region: str | None
    accelerator: str | None  # "v100", "k80", ... from the file name; None if the name has none
    accelerator_count: int | None
    gap_seconds: float
    values: np.ndarray = field(repr=False)

    @property
    def tick_h(self) -> float:
        return self.gap_seconds / HOUR

    @property
    def folder(self) -> str:
        return str(Path(self.path).parent)

    def available(self, nodes: int = 1) -> np.ndarray:
        """Boolean per tick: could ``nodes`` spot instances be obtained (``value >= nodes``)?"""
        if nodes < 1:
            raise TraceError(f"nodes must be >= 1, got {nodes}")
        return self.values >= nodes

    def stats(self, nodes: int = 1) -> TraceStats:
        return availability_stats(self.available(nodes), self.tick_h)


def _parse_name(stem: str) -> tuple[str, str | None, int | None]:
    m = _NAME.match(stem)
    if not m:
        return stem, None, None
    return m.group("zone"), m.group("gpu").lower(), int(m.group("count"))


def load_trace(path: str | Path) -> SpotTrace:
    """Read and validate one trace file; any problem raises :class:`TraceError` naming the file and item."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TraceError(f"cannot read spot trace {p}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TraceError(f"spot trace {p} is not JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("metadata"), dict) or "data" not in raw:
        keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise TraceError(f"spot trace {p}: unknown layout (expected {{\"metadata\": {{\"gap_seconds\": N}}, "
                         f"\"data\": [...]}}, got {keys})")
    gap = raw["metadata"].get("gap_seconds")
    if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not gap > 0:
        raise TraceError(f"spot trace {p}: metadata.gap_seconds = {gap!r} must be a positive number")
    data = raw["data"]
    if not isinstance(data, list):
        raise TraceError(f"spot trace {p}: data must be a list of counts, got {type(data).__name__}")
    if not data:
        raise TraceError(f"spot trace {p}: data is empty (no ticks)")
    for i, v in enumerate(data):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != int(v):
            raise TraceError(f"spot trace {p}: data[{i}] = {v!r} is not a non-negative whole count")
    zone, acc, count = _parse_name(p.stem)
    return SpotTrace(path=str(p), zone=zone, region=region_of_zone(zone), accelerator=acc,
                     accelerator_count=count, gap_seconds=float(gap), values=np.asarray(data, dtype=np.int64))


def find_trace_files(root: str | Path) -> list[Path]:
    """Every ``*.json`` under ``root`` (recursively, sorted); ``root`` may be one file."""
    r = Path(root)
    if r.is_file():
        return [r]
    if not r.is_dir():
        raise TraceError(f"spot traces: {r} is neither a file nor a directory")
    files = sorted(f for f in r.rglob("*.json") if f.is_file())
    if not files:
        raise TraceError(f"spot traces: no *.json trace files under {r}")
    return files


@dataclass(frozen=True)
class TraceGroup:
    """Zones of one collection run: same folder, accelerator and tick, replayed side by side."""

    folder: str
    accelerator: str | None
    accelerator_count: int | None
    traces: tuple[SpotTrace, ...]

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(t.zone for t in self.traces)

    @property
    def tick_h(self) -> float:
        return self.traces[0].tick_h

    @property
    def ticks(self) -> int:
        return min(t.values.size for t in self.traces)

    @property
    def label(self) -> str:
        kind = f"{self.accelerator}_{self.accelerator_count}" if self.accelerator else "?"
        return f"{Path(self.folder).name}/{kind}"

    def matrix(self, nodes: int = 1, zones: Sequence[str] | None = None) -> np.ndarray:
        """(zones x ticks) availability, truncated to the shortest trace of the group."""
        chosen = self.select(zones).traces if zones else self.traces
        n = min(t.values.size for t in chosen)
        return np.stack([t.available(nodes)[:n] for t in chosen])

    def select(self, zones: Sequence[str]) -> TraceGroup:
        by_zone = {t.zone: t for t in self.traces}
        missing = [z for z in zones if z not in by_zone]
        if missing:
            raise TraceError(f"zone(s) {', '.join(missing)} not in {self.label} (has {', '.join(self.zones)})")
        return TraceGroup(self.folder, self.accelerator, self.accelerator_count, tuple(by_zone[z] for z in zones))


def group_traces(traces: Iterable[SpotTrace]) -> list[TraceGroup]:
    """Group by (folder, accelerator, count); a group's traces must share ``gap_seconds``."""
    buckets: dict[tuple[str, str | None, int | None], list[SpotTrace]] = defaultdict(list)
    for t in traces:
        buckets[(t.folder, t.accelerator, t.accelerator_count)].append(t)
    groups = []
    for (folder, acc, count), members in sorted(buckets.items(), key=lambda kv: (kv[0][0], str(kv[0][1]),
                                                                                  kv[0][2] or 0)):
        members.sort(key=lambda t: t.zone)
        gaps = {t.gap_seconds for t in members}
        if len(gaps) > 1:
            detail = ", ".join(f"{Path(t.path).name}: {t.gap_seconds:g} s" for t in members)
            raise TraceError(f"spot traces in {folder} for {acc}_{count} have different ticks ({detail})")
        groups.append(TraceGroup(folder, acc, count, tuple(members)))
    return groups


def load_traces(root: str | Path) -> list[TraceGroup]:
    """Load every trace file under ``root`` and group the zones of each collection run."""
    return group_traces(load_trace(f) for f in find_trace_files(root))
