"""Resource usage of the current process and its children, measured, not estimated.

Plain Python (Linux ``/proc`` plus :mod:`resource`), no Airflow import.

* CPU seconds: ``getrusage`` user + system time of this process (all threads)
  plus the children it has waited for (``RUSAGE_CHILDREN``).
* Peak RSS: on Linux the process's high-water mark (``VmHWM``) is reset to the
  current RSS when measurement starts (``/proc/self/clear_refs`` = 5), so the
  peak covers the measured span only.  Children contribute the largest
  ``ru_maxrss`` of the children waited for during the span.  Where the reset is
  not possible (not Linux, or ``/proc`` read-only) the peak is the lifetime peak
  of the process and :attr:`UsageDelta.peak_scope` says ``"process"``.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"
# ru_maxrss is in KiB on Linux, bytes on macOS.
_MAXRSS_UNIT = 1 if os.uname().sysname == "Darwin" else 1024


def _status_kib(field: str) -> int | None:
    try:
        with open(_STATUS, "rb") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_bytes() -> int:
    kib = _status_kib(b"VmRSS:")
    if kib is not None:
        return kib * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark; False where the OS does not allow it."""
    try:
        with open(_CLEAR_REFS, "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    kib = _status_kib(b"VmHWM:")
    if kib is not None:
        return kib * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT


@dataclass(frozen=True)
class UsageSnapshot:
    """Counters at one moment; :meth:`delta` turns two of them into usage."""

    wall: float  # epoch seconds
    monotonic: float
    self_user: float
    self_sys: float
    child_user: float
    child_sys: float
    child_maxrss: int
    rss: int
    peak_reset: bool

    @classmethod
    def take(cls, reset_peak: bool = False) -> UsageSnapshot:
        reset = reset_peak_rss() if reset_peak else False
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            wall=time.time(),
            monotonic=time.monotonic(),
            self_user=me.ru_utime,
            self_sys=me.ru_stime,
            child_user=kids.ru_utime,
            child_sys=kids.ru_stime,
            child_maxrss=kids.ru_maxrss * _MAXRSS_UNIT,
            rss=current_rss_bytes(),
            peak_reset=reset,
        )

    def delta(self, end: UsageSnapshot) -> UsageDelta:
        """Usage between this snapshot and ``end``."""
        user = (end.self_user - self.self_user) + (end.child_user - self.child_user)
        system = (end.self_sys - self.self_sys) + (end.child_sys - self.child_sys)
        peak = peak_rss_bytes()
        if end.child_maxrss > self.child_maxrss:
            peak = max(peak, end.child_maxrss)
        return UsageDelta(
            start=self.wall,
            end=end.wall,
            wall_s=max(0.0, end.monotonic - self.monotonic),
            cpu_user_s=max(0.0, user),
            cpu_sys_s=max(0.0, system),
            peak_rss_bytes=max(peak, end.rss),
            rss_start_bytes=self.rss,
            peak_scope="span" if self.peak_reset else "process",
        )


@dataclass(frozen=True)
class UsageDelta:
    start: float
    end: float
    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    peak_rss_bytes: int
    rss_start_bytes: int
    peak_scope: str

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s
