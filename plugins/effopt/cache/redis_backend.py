"""The shared cache backend: a Redis server reached with redis-py.

Keys (``P`` is the prefix, ``effopt:cache`` by default)::

    P:e:<namespace>:<function>:<version>:<digest>   entry (string)
    P:l:<namespace>:<function>:<version>:<digest>   single-flight lock (token, with a lease)
    P:t:<namespace>:<tag>                           set of the entry keys carrying the tag
    P:s:<namespace>:<function>                      statistics (hash)
    P:s                                             set of "<namespace>:<function>" with statistics

An entry is written in one ``MULTI``/``EXEC`` transaction (``SET`` of its
first bytes, ``APPEND`` of the others): large buffers are sent as they are,
never joined into one copy, and readers never see a partial entry.  Entry TTLs
are Redis expirations; a tag set lives as long as its longest-lived entry.

A single-flight lock is ``SET NX PX`` with a random token; its holder renews
the lease while it computes and deletes the lock only if the token is still
its own.  A holder that crashes stops renewing, the lease expires and one
waiter takes over.

Needs a standalone Redis (or one shard): the transaction spans several keys.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from effopt.cache.base import (
    FLOAT_STATS,
    INT_STATS,
    BackendError,
    BackendLock,
    CacheBackend,
    CacheKey,
    StatsDelta,
    validate_name,
    zero_stats,
)

__all__ = ["RedisBackend"]

_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# Add an entry key to a tag set; the set expires with its longest-lived member (ARGV[2] = TTL ms, 0 = none).
_TAG_ADD = """
local existed = redis.call('exists', KEYS[1])
redis.call('sadd', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl <= 0 then
  redis.call('persist', KEYS[1])
elseif existed == 0 then
  redis.call('pexpire', KEYS[1], ttl)
else
  local current = redis.call('pttl', KEYS[1])
  if current >= 0 and current < ttl then redis.call('pexpire', KEYS[1], ttl) end
end
return 1
"""
_JOIN_BELOW = 1 << 20  # entries smaller than this are sent as one SET
_BATCH = 500


class _RedisLock(BackendLock):
    needs_extension = True

    def __init__(self, backend: RedisBackend, name: str, token: str, lease_ms: int) -> None:
        self._backend = backend
        self._name = name
        self._token = token
        self._lease_ms = lease_ms

    def extend(self) -> bool:
        with self._backend._guard("lock renewal"):
            return bool(self._backend._extend(keys=[self._name], args=[self._token, self._lease_ms]))

    def release(self) -> None:
        with self._backend._guard("lock release"):
            self._backend._release(keys=[self._name], args=[self._token])


class RedisBackend(CacheBackend):
    """Entries in Redis, shared by every worker that reaches the server.

    ``url_or_client`` is a ``redis://`` / ``rediss://`` / ``unix://`` URL or a
    ``redis.Redis`` client (``decode_responses`` must be off).  A client built
    from a URL gives up after ``timeout_s`` seconds per operation and retries
    a failed operation once without waiting, so an unreachable server costs a
    call little before the cache fails open; a client passed in keeps its own
    timeouts and retry policy.
    """

    kind = "redis"

    def __init__(self, url_or_client: str | redis.Redis, *, prefix: str = "effopt:cache", timeout_s: float = 5.0):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        if isinstance(url_or_client, str):
            try:
                self.client = redis.Redis.from_url(
                    url_or_client,
                    socket_timeout=timeout_s,
                    socket_connect_timeout=timeout_s,
                    retry=Retry(NoBackoff(), 1),
                )
            except ValueError as exc:
                raise ValueError(f"url_or_client is not a valid Redis URL: {exc}") from exc
            self._owns_client = True
        elif isinstance(url_or_client, redis.Redis):
            if url_or_client.get_connection_kwargs().get("decode_responses"):
                raise ValueError("url_or_client: the Redis client must be created with decode_responses=False")
            self.client = url_or_client
            self._owns_client = False
        else:
            raise TypeError(f"url_or_client must be a Redis URL or a redis.Redis client, got {type(url_or_client).__name__}")
        self.prefix = prefix
        if not prefix or any(c in prefix for c in " \t\n*?[]\\"):
            raise ValueError(f"prefix must be a non-empty string without whitespace or glob characters, got {prefix!r}")
        self._extend = self.client.register_script(_EXTEND)
        self._release = self.client.register_script(_RELEASE)
        self._tag_add = self.client.register_script(_TAG_ADD)

    def __repr__(self) -> str:
        return f"RedisBackend({self.describe()!r}, prefix={self.prefix!r})"

    def describe(self) -> str:
        kw = self.client.get_connection_kwargs()
        if kw.get("path"):
            return f"unix://{kw['path']}?db={kw.get('db', 0)}"
        return f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except (redis.RedisError, OSError) as exc:
            raise BackendError(f"redis cache {self.describe()}: {what} failed: {type(exc).__name__}: {exc}") from exc

    # -- key names ------------------------------------------------------------
    def _entry(self, key: CacheKey) -> str:
        return f"{self.prefix}:e:{key}"

    def _tag_set(self, namespace: str, tag: str) -> str:
        return f"{self.prefix}:t:{namespace}:{tag}"

    # -- entries --------------------------------------------------------------
    def get(self, key: CacheKey) -> bytes | None:
        try:  # the hit path: no context manager
            return self.client.get(f"{self.prefix}:e:{key}")
        except (redis.RedisError, OSError) as exc:
            raise BackendError(f"redis cache {self.describe()}: read failed: {type(exc).__name__}: {exc}") from exc

    def put(
        self,
        key: CacheKey,
        segments: Sequence[bytes | memoryview],
        nbytes: int,
        *,
        ttl_s: float | None,
        tags: Sequence[str] = (),
    ) -> None:
        name = self._entry(key)
        px = max(1, int(ttl_s * 1000)) if ttl_s else None
        parts: Sequence[bytes | memoryview] = [b"".join(segments)] if nbytes < _JOIN_BELOW else segments
        with self._guard("write"):
            pipe = self.client.pipeline(transaction=True)
            pipe.set(name, parts[0], px=px)
            for part in parts[1:]:
                pipe.append(name, part)
            for tag in tags:
                self._tag_add(keys=[self._tag_set(key.namespace, tag)], args=[name, px or 0], client=pipe)
            pipe.execute()

    def delete(self, key: CacheKey) -> None:
        with self._guard("delete"):
            self.client.unlink(self._entry(key))

    def _unlink(self, names: Sequence[Any]) -> int:
        removed = 0
        for i in range(0, len(names), _BATCH):
            removed += int(self.client.unlink(*names[i : i + _BATCH]))
        return removed

    def invalidate(
        self, *, namespace: str | None = None, function: str | None = None, tag: str | None = None
    ) -> int:
        if namespace is None and function is None and tag is None:
            raise ValueError("invalidate() needs at least one of namespace, function, tag")
        for value, what in ((namespace, "namespace"), (function, "function"), (tag, "tag")):
            if value is not None:
                validate_name(value, what)
        with self._guard("invalidate"):
            if tag is None:
                pattern = f"{self.prefix}:e:{namespace or '*'}:{function or '*'}:*"
                return self._unlink(list(self.client.scan_iter(match=pattern, count=1000)))
            if namespace is not None:
                sets = [self._tag_set(namespace, tag).encode()]
            else:
                sets = list(self.client.scan_iter(match=f"{self.prefix}:t:*:{tag}", count=1000))
            removed = 0
            entry_prefix = f"{self.prefix}:e:".encode()
            for tag_set in sets:
                members = list(self.client.smembers(tag_set))
                if function is not None:
                    members = [m for m in members if m[len(entry_prefix) :].split(b":")[1] == function.encode()]
                removed += self._unlink(members)
                for i in range(0, len(members), _BATCH):
                    self.client.srem(tag_set, *members[i : i + _BATCH])
            return removed

    def entry_count(self, namespace: str | None = None) -> int:
        """Number of entries stored (in ``namespace`` or in all of them)."""
        with self._guard("count"):
            return sum(1 for _ in self.client.scan_iter(match=f"{self.prefix}:e:{namespace or '*'}:*", count=1000))

    # -- locks ----------------------------------------------------------------
    def try_lock(self, key: CacheKey, lease_s: float) -> BackendLock | None:
        name = f"{self.prefix}:l:{key}"
        token = secrets.token_hex(16)
        lease_ms = max(1, int(lease_s * 1000))
        with self._guard("lock"):
            if self.client.set(name, token, nx=True, px=lease_ms):
                return _RedisLock(self, name, token, lease_ms)
        return None

    # -- statistics -----------------------------------------------------------
    def add_stats(self, delta: StatsDelta) -> None:
        if not delta:
            return
        with self._guard("statistics update"):
            pipe = self.client.pipeline(transaction=False)
            for (ns, fn), fields in delta.items():
                name = f"{self.prefix}:s:{ns}:{fn}"
                for field in INT_STATS:
                    if fields.get(field):
                        pipe.hincrby(name, field, int(fields[field]))
                for field in FLOAT_STATS:
                    if fields.get(field):
                        pipe.hincrbyfloat(name, field, float(fields[field]))
                pipe.sadd(f"{self.prefix}:s", f"{ns}:{fn}")
            pipe.execute()

    def read_stats(self, namespace: str | None = None) -> dict[str, dict[str, dict[str, float]]]:
        with self._guard("statistics read"):
            members = sorted(m.decode() for m in self.client.smembers(f"{self.prefix}:s"))
            pairs = [m.split(":", 1) for m in members]
            pairs = [(ns, fn) for ns, fn in pairs if namespace is None or ns == namespace]
            pipe = self.client.pipeline(transaction=False)
            for ns, fn in pairs:
                pipe.hgetall(f"{self.prefix}:s:{ns}:{fn}")
            rows = pipe.execute()
        out: dict[str, dict[str, dict[str, float]]] = {}
        for (ns, fn), raw in zip(pairs, rows, strict=True):
            stats = zero_stats()
            for field, value in raw.items():
                name = field.decode()
                if name in stats:
                    stats[name] = float(value) if name in FLOAT_STATS else int(value)
            out.setdefault(ns, {})[fn] = stats
        return out

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
