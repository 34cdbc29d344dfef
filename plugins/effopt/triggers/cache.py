"""``CacheEntryTrigger``: waits in the triggerer while another worker computes a cached task's entry.

A cached task that finds the single-flight lock of its key held defers to
this trigger instead of polling inside its worker slot.  The trigger polls the
entry and the lock (no entry is read, no secret is needed) and fires once:

* ``{"status": "ready"}``: the entry is stored; the task resumes and takes it
  from the cache;
* ``{"status": "free"}``: the lock is gone without an entry (the holder
  failed, or its result could not be cached); the task resumes and computes
  (or defers again behind a worker that took the lock meanwhile);
* ``{"status": "timeout"}``: ``deadline`` passed (``[effopt]
  cache_lock_timeout_s`` after the first deferral);
* ``{"status": "unavailable", "reason": ...}``: the triggerer cannot see the
  backend (a Redis it cannot reach, a local cache directory on another
  machine); the task resumes and waits in its worker as it would without a
  triggerer.

Its kwargs name the backend without credentials: the Redis connection id
(resolved in the triggerer) or the local cache directory.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

__all__ = ["CacheEntryTrigger", "backend_from_reference"]

_POLL_MAX_S = 5.0


def backend_from_reference(ref: dict[str, Any]) -> Any:
    """The cache backend a trigger's ``backend`` kwarg names (built in the triggerer)."""
    kind = ref.get("kind")
    if kind == "redis":
        from effopt.cache import RedisBackend
        from effopt.hooks.cache import CacheHook

        hook = CacheHook(redis_conn_id=ref["conn_id"])
        backend = hook.get_backend_of_kind("redis")
        if backend.prefix != ref.get("prefix", backend.prefix):
            backend.close()
            backend = RedisBackend(backend.client, prefix=ref["prefix"])
        return backend
    if kind == "local":
        from effopt.cache import LocalBackend

        path = ref["path"]
        if not os.path.isfile(os.path.join(path, "index.sqlite3")):
            raise FileNotFoundError(f"no local cache at {path} on the triggerer's machine")
        return LocalBackend(path, max_bytes=None)
    raise ValueError(f"unknown cache backend reference {ref!r}")


class CacheEntryTrigger(BaseTrigger):
    """Fires when the entry of ``key`` is stored, its lock is released, or ``deadline`` (epoch s) passes."""

    def __init__(self, key: str, backend: dict[str, Any], deadline: float, poll_s: float = 0.5) -> None:
        super().__init__()
        self.key = key
        self.backend = dict(backend)
        self.deadline = float(deadline)
        self.poll_s = float(poll_s)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "effopt.triggers.cache.CacheEntryTrigger",
            {"key": self.key, "backend": self.backend, "deadline": self.deadline, "poll_s": self.poll_s},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from effopt.cache import BackendError, CacheKey

        key = CacheKey.parse(self.key)
        try:
            backend = await asyncio.to_thread(backend_from_reference, self.backend)
        except Exception as exc:  # noqa: BLE001 - any reason the triggerer cannot see the cache
            yield TriggerEvent({"status": "unavailable", "reason": f"{type(exc).__name__}: {exc}"})
            return
        delay = self.poll_s
        try:
            while True:
                try:
                    stored, locked = await asyncio.to_thread(backend.peek, key)
                except BackendError as exc:
                    yield TriggerEvent({"status": "unavailable", "reason": str(exc)})
                    return
                if stored:
                    yield TriggerEvent({"status": "ready"})
                    return
                if not locked:
                    yield TriggerEvent({"status": "free"})
                    return
                remaining = self.deadline - time.time()
                if remaining <= 0:
                    yield TriggerEvent({"status": "timeout"})
                    return
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 1.5, _POLL_MAX_S)
        finally:
            await asyncio.to_thread(backend.close)
