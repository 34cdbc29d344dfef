"""One progress bar for every long-running command: a single line on stderr.

Library code reports progress through a plain ``progress(done, total)``
callback; the CLI passes a :class:`ProgressBar`, which draws only when stderr
is a terminal unless told otherwise.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``label [#####.....] done/total elapsed [note]`` redrawn in place; a newline when done."""

    def __init__(self, label: str, enabled: bool | None = None, width: int = 30, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.width = width
        self.start = time.perf_counter()

    def __call__(self, done: int, total: int, note: str = "") -> None:
        if not self.enabled or total <= 0:
            return
        fill = min(self.width, int(self.width * done / total))
        elapsed = time.perf_counter() - self.start
        note = note if len(note) <= 40 else note[:37] + "..."
        tail = f"  {note}" if note else ""
        self.stream.write(f"\r{self.label} [{'#' * fill}{'.' * (self.width - fill)}] {done}/{total} "
                          f"{elapsed:6.1f}s{tail}\x1b[K")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()
