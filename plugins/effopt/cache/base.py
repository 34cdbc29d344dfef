"""What every cache backend provides, and the names shared by backends and the cache."""

from __future__ import annotations

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
    "CacheBackend",
    "CacheKey",
    "StatsDelta",
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
    """The backend could not be reached or did not answer in time (the cache fails open on it)."""


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
    def add_stats(self, delta: StatsDelta) -> None:
        """Add the increments of ``delta`` to the shared statistics."""

    @abstractmethod
    def read_stats(self, namespace: str | None = None) -> dict[str, dict[str, dict[str, float]]]:
        """``{namespace: {function: {field: value}}}`` for one namespace or all of them."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to release
        """Release connections and files held by this object."""


def zero_stats() -> dict[str, float]:
    return {f: (0.0 if f in FLOAT_STATS else 0) for f in STAT_FIELDS}
