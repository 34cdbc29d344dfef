"""Process usage measurement (effopt.usage) against real work in real processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from effopt.usage import UsageSnapshot


def _burn(seconds: float) -> None:
    import time

    start = time.process_time()
    while time.process_time() - start < seconds:
        sum(i * i for i in range(1000))


def test_cpu_seconds_of_this_process():
    start = UsageSnapshot.take(reset_peak=True)
    _burn(0.3)
    delta = start.delta(UsageSnapshot.take())
    assert delta.cpu_s >= 0.29
    assert delta.wall_s >= delta.cpu_s * 0.5


def test_children_cpu_is_included():
    start = UsageSnapshot.take()
    subprocess.run([sys.executable, "-c", "import time\nt=time.process_time()\nwhile time.process_time()-t<0.4: pass"],
                   check=True)
    delta = start.delta(UsageSnapshot.take())
    assert delta.cpu_s >= 0.39


def test_peak_rss_covers_the_span_only():
    # Run in a fresh interpreter so the peak of earlier tests cannot leak in.
    code = textwrap.dedent(
        """
        import numpy as np
        from effopt.usage import UsageSnapshot
        big = np.ones(300 * 2**20 // 8); del big           # a peak BEFORE the span
        s = UsageSnapshot.take(reset_peak=True)
        a = np.ones(100 * 2**20 // 8); a[::512] += 1; del a  # ~100 MB inside the span
        d = s.delta(UsageSnapshot.take())
        print(d.peak_rss_bytes - d.rss_start_bytes, d.peak_scope)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={"PYTHONPATH": "plugins"}).stdout.split()
    growth, scope = int(out[0]), out[1]
    assert scope == "span"
    assert 95 * 2**20 <= growth < 250 * 2**20  # the 300 MB before the span is not counted
