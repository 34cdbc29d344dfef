"""What every cache backend provides, and the names shared by backends and the cache."""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import NamedTuple

__all__ = [
    "FLOAT_STATS",
    "INT_STATS",
    "STAT_FIELDS",
    "BackendError",
    "BackendLock",
    "BackendRefused",
    "CacheBackend",
    "CacheKey",
    "CorruptEntry",
    "StatsDelta",
    "parse_stat",
    "validate_name",
    "zero_stats",
]

INT_STATS = ("hits", "misses", "rejected", "errors", "bytes")
FLOAT_STATS = ("compute_s", "saved_s")
#: Fields of each function's statistics, in display order.
STAT_FIELDS = ("hits", "misses", "rejected", "errors", "compute_s", "saved_s", "bytes")

#: ``{(namespace, function): {field: increment}}``
StatsDelta = Mapping[tuple[str, str], Mapping[str, float]]

# Namespaces, function names and versions are parts of keys (and of Redis SCAN
# patterns): no separators, glob characters or whitespace.
_NAME = re.compile(r"^[^\s:*?\[\]\\]{1,200}$")


def validate_name(value: object, what: str) -> str:
    """``value`` if it can be part of a cache key, else a ValueError naming ``what``."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(
            f"{what} must be a non-empty string of at most 200 characters without whitespace "
            f"or any of : * ? [ ] \\, got {value!r}"
        )
    return value


class BackendError(RuntimeError):
    """The backend could not be reached or did not answer in time: an outage.

    The cache fails open on it: the call computes without the cache, and calls
    skip the backend until it answers again.
    """


class BackendRefused(BackendError):
    """The backend answered but refused one operation: not an outage.

    ``kind`` says why: ``"oom"`` (out of memory), ``"readonly"`` (a replica, or
    writes disabled after a persistence error), ``"wrongtype"`` (a key holds a
    value of another type than effopt writes there), ``"error"`` (any other
    error reply).  The call goes on without that operation and the next call
    uses the backend again.
    """

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


class CorruptEntry(BackendRefused):
    """The stored value of an entry key is not an entry effopt wrote (e.g. a hash): reject, delete, recompute."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "wrongtype")


class CacheKey(NamedTuple):
    """Where a result lives: namespace + function + version + digest of the inputs."""

    namespace: str
    function: str
    version: str
    digest: str

    def __str__(self) -> str:
        return f"{self.namespace}:{self.function}:{self.version}:{self.digest}"

    @classmethod
    def parse(cls, text: str) -> CacheKey:
        parts = text.split(":")
        if len(parts) != 4 or not all(parts):
            raise ValueError(f"not a cache key: {text!r} (expected namespace:function:version:digest)")
        return cls(*parts)


class BackendLock(ABC):
    """A held single-flight lock."""

    #: Whether :meth:`extend` must be called while computing (leases that expire on their own).
    needs_extension: bool = False

    @abstractmethod
    def extend(self) -> bool:
        """Renew the lease; ``False`` when the lock was lost (expired and taken by another worker)."""

    @abstractmethod
    def release(self) -> None:
        """Give the lock up (no-op if it was lost)."""

    def abandon(self) -> None:
        """Give the lock up without waiting on the backend (during an outage); by default :meth:`release`."""
        self.release()


class CacheBackend(ABC):
    """Storage of signed entries, single-flight locks, tag indexes and statistics.

    Backends store opaque bytes: signing and serialisation happen in
    :class:`effopt.cache.ComputationCache`.  Every method raises
    :class:`BackendError` when the storage is unreachable or too slow, so the
    cache can fail open.
    """

    #: ``"local"`` or ``"redis"``: written into cache references.
    kind: str

    @abstractmethod
    def describe(self) -> str:
        """Where the entries are, for messages (never contains a password)."""

    @abstractmethod
    def get(self, key: CacheKey) -> bytes | bytearray | None:
        """The stored bytes of ``key``, or ``None`` when absent or expired."""

    @abstractmethod
    def put(
        self,
        key: CacheKey,
        segments: Sequence[bytes | memoryview],
        nbytes: int,
        *,
        ttl_s: float | None,
        tags: Sequence[str] = (),
    ) -> None:
        """Store the concatenation of ``segments`` (``nbytes`` long) under ``key`` atomically.

        Readers see either the previous value or the complete new one.
        """

    @abstractmethod
    def delete(self, key: CacheKey) -> None:
        """Remove the entry of ``key`` if present."""

    @abstractmethod
    def invalidate(
        self, *, namespace: str | None = None, function: str | None = None, tag: str | None = None
    ) -> int:
        """Remove every entry matching all given filters (``None`` = any); return how many."""

    @abstractmethod
    def try_lock(self, key: CacheKey, lease_s: float) -> BackendLock | None:
        """Take the single-flight lock of ``key`` without waiting; ``None`` if another worker holds it."""

    @abstractmethod
    def add_stats(self, delta: StatsDelta, batch: str | None = None) -> list[str]:
        """Add the increments of ``delta`` to the shared statistics, atomically.

        ``batch`` names the increments: a batch already added (its first
        attempt went through but the reply was lost) is not added again, so a
        flush can be retried without counting twice.  Returns what had to be
        repaired on the way (a statistics field that was not a number, reset
        to 0; a statistics key of the wrong type, recreated), one line each.
        """

    @abstractmethod
    def read_stats(
        self, namespace: str | None = None, problems: list[str] | None = None
    ) -> dict[str, dict[str, dict[str, float]]]:
        """``{namespace: {function: {field: value}}}`` for one namespace or all of them.

        Never fails on corrupted statistics: a field that is not a
        non-negative number is reported, reset to 0 and read as 0; an entry
        of the statistics index that is not ``namespace:function`` is
        reported and removed.  Each such problem is logged and appended to
        ``problems`` when given.
        """

    def ping(self) -> None:  # noqa: B027 - backends that can be unreachable override it
        """Raise :class:`BackendError` unless the backend answers now."""

    @abstractmethod
    def peek(self, key: CacheKey) -> tuple[bool, bool]:
        """``(entry stored, lock held)`` for ``key``, without reading the entry or taking the lock."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to release
        """Release connections and files held by this object."""


def zero_stats() -> dict[str, float]:
    return {f: (0.0 if f in FLOAT_STATS else 0) for f in STAT_FIELDS}


_INT_TEXT = re.compile(r"^[0-9]{1,18}$")  # below 10**18: an increment cannot overflow a 64-bit counter
_FLOAT_TEXT = re.compile(r"^[0-9]{1,300}(\.[0-9]{0,40})?([eE][-+]?[0-9]{1,3})?$")


def parse_stat(field: str, raw: object) -> float | None:
    """A statistics field's stored value as a number, ``None`` when it is not a valid non-negative counter."""
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if 0 <= raw < 10**18 else None
    if isinstance(raw, float):
        if field in FLOAT_STATS and math.isfinite(raw) and 0 <= raw < 1e300:
            return raw
        return None
    if not isinstance(raw, str):
        return None
    if field in FLOAT_STATS:
        if not _FLOAT_TEXT.match(raw):
            return None
        value = float(raw)
        return value if math.isfinite(value) and value < 1e300 else None
    return int(raw) if _INT_TEXT.match(raw) else None
