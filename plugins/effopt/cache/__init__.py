"""Cached computation: compute each (function, version, inputs) once, across tasks, runs and workers.

::

    from effopt.cache import ComputationCache, LocalBackend, RedisBackend

    cache = ComputationCache(backend=RedisBackend("redis://cache:6379/0"), secret=key_bytes, namespace="ml")

    @cache.cached(ttl=86400, ignore=("log",), tags=("features",))
    def features(frame, window: int, log=None): ...

    features(df, 7)               # computes, signs and stores
    features(df, 7)               # verified hit: the body does not run
    features.refresh(df, 7)       # recompute and overwrite
    cache.invalidate(tag="features")
    cache.stats()                 # {"mod.features": {"hits": 1, "misses": 1, ...}}

Plain Python (no Airflow import).  See :mod:`effopt.cache.core` for the call
flow, :mod:`effopt.cache.hashing` for what keys see (and do not see),
:mod:`effopt.cache.codec` for the signed entry format.
"""

from effopt.cache.base import STAT_FIELDS, BackendError, BackendRefused, CacheBackend, CacheKey, CorruptEntry
from effopt.cache.core import (
    REFERENCE_MARKER,
    CacheReferenceError,
    CallResult,
    ComputationCache,
    FunctionSpec,
    LockHeld,
    Lookup,
    SingleFlightTimeout,
    is_cache_reference,
)
from effopt.cache.hashing import UnhashableInput, canonical_digest, code_version, function_name, task_function_name
from effopt.cache.local import LocalBackend
from effopt.cache.redis_backend import RedisBackend

__all__ = [
    "REFERENCE_MARKER",
    "STAT_FIELDS",
    "BackendError",
    "BackendRefused",
    "CacheBackend",
    "CacheKey",
    "CacheReferenceError",
    "CallResult",
    "ComputationCache",
    "CorruptEntry",
    "FunctionSpec",
    "LocalBackend",
    "LockHeld",
    "Lookup",
    "RedisBackend",
    "SingleFlightTimeout",
    "UnhashableInput",
    "canonical_digest",
    "code_version",
    "function_name",
    "is_cache_reference",
    "task_function_name",
]
