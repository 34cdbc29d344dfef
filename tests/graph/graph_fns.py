"""Small deterministic functions for graph tests (module level, so worker processes can import them)."""

from __future__ import annotations

import threading
import time

P = 1_000_003


def add(a: int, b: int = 0, k: int = 0) -> int:
    return (a + b + k) % P


def mul(a: int, b: int = 1, k: int = 1) -> int:
    return (a * (b or 1) * (k or 1)) % P


def mix(a: int, k: int = 0) -> int:
    return (a * 31 + k) % P


def pair(a: int, k: int = 0) -> tuple[int, int]:
    return (a + k) % P, (a * 7 + k) % P


def fail(a: int) -> int:
    raise RuntimeError(f"boom on {a}")


def wrong_arity(a: int) -> tuple[int, int, int]:
    return a, a, a


class Tracker:
    """Counts how many tracked calls run at once, and what ran while each ``alone`` call ran."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: set[str] = set()
        self.max_active = 0
        self.overlaps: dict[str, set[str]] = {}

    def run(self, name: str, seconds: float) -> None:
        with self.lock:
            self.overlaps.setdefault(name, set()).update(self.active)
            for other in self.active:
                self.overlaps.setdefault(other, set()).add(name)
            self.active.add(name)
            self.max_active = max(self.max_active, len(self.active))
        time.sleep(seconds)
        with self.lock:
            self.active.discard(name)


TRACKER = Tracker()


def tracked(x: int, name: str, seconds: float = 0.05) -> int:
    TRACKER.run(name, seconds)
    return x + 1
