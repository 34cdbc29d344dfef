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

    P:b:<batch id>                                  marker of a statistics batch already added (1 day)

A single-flight lock is a random token with a lease, taken by a script that
also accepts a token this process gave up on (a lock request that timed out
may still have been applied) and replaces a lock key that never expires or
holds another type (not a lock effopt wrote).  Its holder renews the lease
while it computes and deletes the lock only if the token is still its own.  A
holder that crashes stops renewing, the lease expires and one waiter takes
over.

Errors are told apart: a refused connection, a reset or a timeout is an
outage (:class:`~effopt.cache.base.BackendError`); an error reply (out of
memory, a key of the wrong type, a replica refusing writes) is
:class:`~effopt.cache.base.BackendRefused`, which does not stop the cache.
The client gives up after ``timeout_s`` and retries only a connection error
(a stale pooled connection), never a timeout, so a hung server costs one
``timeout_s``.

Statistics batches are added by one script, atomically and at most once per
batch id, after checking every field they touch (a field that is not a
counter is reset to 0 and reported instead of failing the batch).

Needs a standalone Redis (or one shard): the transaction spans several keys.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from effopt.cache.base import (
    FLOAT_STATS,
    INT_STATS,
    STAT_FIELDS,
    BackendError,
    BackendLock,
    BackendRefused,
    CacheBackend,
    CacheKey,
    CorruptEntry,
    StatsDelta,
    parse_stat,
    validate_name,
    zero_stats,
)

__all__ = ["BATCH_TTL_S", "RedisBackend", "classify_error"]

log = logging.getLogger("effopt.cache")

_EXTEND = """
if redis.call('type', KEYS[1]).ok == 'string' and redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('type', KEYS[1]).ok == 'string' and redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
# Take the lock: 1 taken, 0 held by someone else, 2 taken over from a key effopt did not write (no lease or
# another type).  ARGV[3] is a token of this process's that a timed-out request may have left behind, or ''.
_TRY_LOCK = """
local kind = redis.call('type', KEYS[1]).ok
local result = 1
if kind == 'string' then
  local current = redis.call('get', KEYS[1])
  if current ~= ARGV[1] and (ARGV[3] == '' or current ~= ARGV[3]) then
    if redis.call('pttl', KEYS[1]) ~= -1 then return 0 end
    result = 2
  end
elseif kind ~= 'none' then
  redis.call('del', KEYS[1])
  result = 2
end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
return result
"""
# Add an entry key to a tag set; the set expires with its longest-lived member (ARGV[2] = TTL ms, 0 = none).
# A tag key of another type (not written by effopt) is replaced.
_TAG_ADD = """
local kind = redis.call('type', KEYS[1]).ok
if kind ~= 'set' and kind ~= 'none' then redis.call('del', KEYS[1]) end
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
# Add one statistics batch.  KEYS[1] index set, KEYS[2] batch marker, KEYS[3..] statistics hashes;
# ARGV[1] marker TTL s, ARGV[2] number of hashes, then per hash: member, number of fields, (field, i|f, value)*.
# Everything is checked before the first write, so a batch is added whole or not at all (under OOM the
# marker, written first, is refused).  Returns {'duplicate'} or the repairs made: {what, member, field, old}.
_ADD_STATS = """
if redis.call('exists', KEYS[2]) == 1 then return {'duplicate'} end
local function bad_int(v)
  return v and not (string.match(v, '^%d+$') and #v <= 18)
end
local function bad_float(v)
  if not v then return false end
  if #v > 340 or not (string.match(v, '^%d+%.?%d*$') or string.match(v, '^%d+%.?%d*[eE][-+]?%d+$')) then
    return true
  end
  local n = tonumber(v)
  return n == nil or n ~= n or n >= 1e300
end
local repairs = {}
local index_kind = redis.call('type', KEYS[1]).ok
local plan = {}
local pos = 3
for h = 1, tonumber(ARGV[2]) do
  local key = KEYS[2 + h]
  local kind = redis.call('type', key).ok
  local e = {key = key, member = ARGV[pos], kind = kind, resets = {}, incs = {}}
  local n = tonumber(ARGV[pos + 1])
  pos = pos + 2
  for _ = 1, n do
    local field, t, value = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2]
    pos = pos + 3
    if kind == 'hash' then
      local current = redis.call('hget', key, field)
      if (t == 'i' and bad_int(current)) or (t == 'f' and bad_float(current)) then
        table.insert(e.resets, {field, current})
      end
    end
    table.insert(e.incs, {field, t, value})
  end
  table.insert(plan, e)
end
redis.call('set', KEYS[2], '1', 'EX', ARGV[1])
if index_kind ~= 'set' and index_kind ~= 'none' then
  redis.call('del', KEYS[1])
  table.insert(repairs, {'index', '', '', index_kind})
end
for _, e in ipairs(plan) do
  if e.kind ~= 'hash' and e.kind ~= 'none' then
    redis.call('del', e.key)
    table.insert(repairs, {'type', e.member, '', e.kind})
  end
  for _, r in ipairs(e.resets) do
    redis.call('hset', e.key, r[1], '0')
    table.insert(repairs, {'field', e.member, r[1], r[2]})
  end
  for _, inc in ipairs(e.incs) do
    if inc[2] == 'i' then
      redis.call('hincrby', e.key, inc[1], inc[3])
    else
      redis.call('hincrbyfloat', e.key, inc[1], inc[3])
    end
  end
  redis.call('sadd', KEYS[1], e.member)
end
return repairs
"""
# Reset a statistics field found corrupted by a reader, unless it changed meanwhile.
_RESET_FIELD = """
if redis.call('type', KEYS[1]).ok ~= 'hash' then return 0 end
if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('hset', KEYS[1], ARGV[1], '0')
  return 1
end
return 0
"""
# Delete a key unless it is of the type ARGV[1] (a statistics key or index effopt did not write).
_DROP_WRONG_TYPE = """
local kind = redis.call('type', KEYS[1]).ok
if kind ~= ARGV[1] and kind ~= 'none' then
  redis.call('del', KEYS[1])
  return 1
end
return 0
"""
#: How long a statistics batch is remembered (a retry after a lost reply within it is not added twice).
BATCH_TTL_S = 86400
# Error replies that mean the server cannot serve now (an outage), not that it refused one operation.
_OUTAGE_REPLIES = ("LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOAUTH", "WRONGPASS", "NOREPLICAS")
_MAX_ABANDONED = 1024
_JOIN_BELOW = 1 << 20  # entries smaller than this are sent as one SET
_BATCH = 500


def classify_error(exc: BaseException, message: str) -> BackendError:
    """An outage (:class:`BackendError`) or a refusal (:class:`BackendRefused`) for a redis-py error."""
    if isinstance(exc, redis.ResponseError):
        text = str(exc)
        reply = text.split("caused error: ", 1)[-1]  # a pipeline names the command before the reply
        code = reply.split(" ", 1)[0]
        if isinstance(exc, redis.OutOfMemoryError) or code == "OOM" or "used memory > 'maxmemory'" in reply:
            return BackendRefused(message, "oom")
        if isinstance(exc, redis.ReadOnlyError) or code in ("READONLY", "MISCONF"):
            return BackendRefused(message, "readonly")
        if code == "WRONGTYPE":
            return BackendRefused(message, "wrongtype")
        if code in _OUTAGE_REPLIES or isinstance(exc, (redis.exceptions.ClusterDownError,
                                                       redis.exceptions.TryAgainError)):
            return BackendError(message)
        return BackendRefused(message, "error")
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, redis.exceptions.InvalidResponse, OSError)):
        return BackendError(message)
    return BackendRefused(message, "error")  # a client-side error (DataError...): this operation only


class _RedisLock(BackendLock):
    needs_extension = True

    def __init__(self, backend: RedisBackend, name: str, token: str, lease_ms: int) -> None:
        self._backend = backend
        self._name = name
        self.token = token
        self._lease_ms = lease_ms

    def extend(self) -> bool:
        with self._backend._guard("lock renewal"):
            return bool(self._backend._extend(keys=[self._name], args=[self.token, self._lease_ms]))

    def release(self) -> None:
        try:
            with self._backend._guard("lock release"):
                self._backend._release(keys=[self._name], args=[self.token])
        except BackendError as exc:
            if not isinstance(exc, BackendRefused):
                self._backend._abandoned_token(self._name, self.token)
            raise

    def abandon(self) -> None:
        """Leave the lock to its lease: the next attempt of this process on the key takes it back at once."""
        self._backend._abandoned_token(self._name, self.token)


class RedisBackend(CacheBackend):
    """Entries in Redis, shared by every worker that reaches the server.

    ``url_or_client`` is a ``redis://`` / ``rediss://`` / ``unix://`` URL or a
    ``redis.Redis`` client (``decode_responses`` must be off).  A client built
    from a URL gives up after ``timeout_s`` seconds per operation and retries
    an operation once, without waiting, only after a connection error (a
    pooled connection the server closed), never after a timeout: a hung
    server costs one ``timeout_s``.  A client passed in keeps its own
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
                    retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
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
            raise TypeError("url_or_client must be a Redis URL or a redis.Redis client, got "
                            f"{type(url_or_client).__name__}")
        self.prefix = prefix
        if not prefix or any(c in prefix for c in " \t\n*?[]\\"):
            raise ValueError(f"prefix must be a non-empty string without whitespace or glob characters, got {prefix!r}")
        self._extend = self.client.register_script(_EXTEND)
        self._release = self.client.register_script(_RELEASE)
        self._try_lock = self.client.register_script(_TRY_LOCK)
        self._tag_add = self.client.register_script(_TAG_ADD)
        self._add_stats = self.client.register_script(_ADD_STATS)
        self._reset_field = self.client.register_script(_RESET_FIELD)
        self._drop_wrong_type = self.client.register_script(_DROP_WRONG_TYPE)
        self._abandoned: dict[str, str] = {}
        self._abandoned_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RedisBackend({self.describe()!r}, prefix={self.prefix!r})"

    def describe(self) -> str:
        kw = self.client.get_connection_kwargs()
        if kw.get("path"):
            return f"unix://{kw['path']}?db={kw.get('db', 0)}"
        return f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"

    def _error(self, what: str, exc: BaseException) -> BackendError:
        return classify_error(exc, f"redis cache {self.describe()}: {what} failed: {type(exc).__name__}: {exc}")

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except (redis.RedisError, OSError) as exc:
            raise self._error(what, exc) from exc

    def ping(self) -> None:
        with self._guard("ping"):
            self.client.ping()

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
            error = self._error("read", exc)
            if isinstance(error, BackendRefused) and error.kind == "wrongtype":
                raise CorruptEntry(f"{error}: the entry key holds another type than an entry") from exc
            raise error from exc

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
            pipe.set(name, parts[0], px=px)  # SET replaces a key of any type
            for part in parts[1:]:
                pipe.append(name, part)
            for tag in tags:
                self._tag_add(keys=[self._tag_set(key.namespace, tag)], args=[name, px or 0], client=pipe)
            pipe.execute()

    def delete(self, key: CacheKey) -> None:
        with self._guard("delete"):
            self.client.unlink(self._entry(key))

    def peek(self, key: CacheKey) -> tuple[bool, bool]:
        with self._guard("peek"):
            pipe = self.client.pipeline(transaction=False)
            pipe.exists(self._entry(key))
            pipe.exists(f"{self.prefix}:l:{key}")
            entry, lock = pipe.execute()
        return bool(entry), bool(lock)

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
                try:
                    members = list(self.client.smembers(tag_set))
                except redis.ResponseError as exc:
                    if not str(exc).startswith("WRONGTYPE"):
                        raise
                    self._drop_wrong_type(keys=[tag_set], args=["set"])
                    log.warning("effopt cache: the tag index %s was not a set (not written by effopt); removed",
                                tag_set.decode(errors="replace"))
                    continue
                if function is not None:
                    members = [m for m in members if m[len(entry_prefix) :].split(b":")[1:2] == [function.encode()]]
                removed += self._unlink(members)
                for i in range(0, len(members), _BATCH):
                    self.client.srem(tag_set, *members[i : i + _BATCH])
            return removed

    def entry_count(self, namespace: str | None = None) -> int:
        """Number of entries stored (in ``namespace`` or in all of them)."""
        with self._guard("count"):
            return sum(1 for _ in self.client.scan_iter(match=f"{self.prefix}:e:{namespace or '*'}:*", count=1000))

    # -- locks ----------------------------------------------------------------
    def _abandoned_token(self, name: str, token: str) -> None:
        with self._abandoned_lock:
            self._abandoned.pop(name, None)
            self._abandoned[name] = token
            while len(self._abandoned) > _MAX_ABANDONED:
                self._abandoned.pop(next(iter(self._abandoned)))

    def try_lock(self, key: CacheKey, lease_s: float) -> BackendLock | None:
        name = f"{self.prefix}:l:{key}"
        token = secrets.token_hex(16)
        lease_ms = max(1, int(lease_s * 1000))
        with self._abandoned_lock:
            reclaim = self._abandoned.get(name, "")
        try:
            with self._guard("lock"):
                taken = int(self._try_lock(keys=[name], args=[token, lease_ms, reclaim]))
        except BackendError as exc:
            if not isinstance(exc, BackendRefused):
                # The request may still reach the server (a timeout): the lock would then be ours.
                self._abandoned_token(name, token)
            raise
        if not taken:
            return None
        if reclaim:
            with self._abandoned_lock:
                if self._abandoned.get(name) == reclaim:
                    del self._abandoned[name]
        if taken == 2:
            log.warning("effopt cache: the lock key %s had no lease or another type (not written by effopt); "
                        "replaced", name)
        return _RedisLock(self, name, token, lease_ms)

    # -- statistics -----------------------------------------------------------
    def _stats_key(self, ns: str, fn: str) -> str:
        return f"{self.prefix}:s:{ns}:{fn}"

    def add_stats(self, delta: StatsDelta, batch: str | None = None) -> list[str]:
        if not delta:
            return []
        keys = [f"{self.prefix}:s", f"{self.prefix}:b:{batch or secrets.token_hex(16)}"]
        args: list[Any] = [BATCH_TTL_S, 0]
        for (ns, fn), fields in delta.items():
            increments = []
            for field in INT_STATS:
                if fields.get(field):
                    increments += [field, "i", int(fields[field])]
            for field in FLOAT_STATS:
                if fields.get(field):
                    increments += [field, "f", repr(float(fields[field]))]
            if not increments:
                continue
            keys.append(self._stats_key(ns, fn))
            args += [f"{ns}:{fn}", len(increments) // 3, *increments]
            args[1] += 1
        if args[1] == 0:
            return []
        with self._guard("statistics update"):
            reply = self._add_stats(keys=keys, args=args)
        if reply and reply[0] == b"duplicate":
            return []
        repairs = []
        for what, member, field, old in reply:
            member_s = member.decode(errors="replace")
            if what == b"field":
                repairs.append(f"statistics field {field.decode(errors='replace')!r} of {member_s} held "
                               f"{old!r:.60}, not a counter: reset to 0 before adding to it")
            elif what == b"type":
                repairs.append(f"the statistics of {member_s} were a Redis {old.decode()}, not a hash: recreated")
            else:
                repairs.append(f"the statistics index {self.prefix}:s was a Redis {old.decode()}, not a set: recreated")
                with self._guard("statistics index rebuild"):
                    self._rebuild_index()
        for line in repairs:
            log.warning("effopt cache: %s", line)
        return repairs

    def _rebuild_index(self) -> list[bytes]:
        """Re-add every statistics hash to the index (after the index was found damaged)."""
        index = f"{self.prefix}:s"
        start = len(f"{self.prefix}:s:")
        members = [name[start:] for name in self.client.scan_iter(match=f"{self.prefix}:s:*", count=1000)]
        for i in range(0, len(members), _BATCH):
            self.client.sadd(index, *members[i : i + _BATCH])
        return members

    def read_stats(
        self, namespace: str | None = None, problems: list[str] | None = None
    ) -> dict[str, dict[str, dict[str, float]]]:
        found: list[str] = []
        index = f"{self.prefix}:s"
        with self._guard("statistics read"):
            try:
                members = list(self.client.smembers(index))
            except redis.ResponseError as exc:
                if not str(exc).startswith("WRONGTYPE"):
                    raise
                self._repair(lambda: self._drop_wrong_type(keys=[index], args=["set"]))
                found.append(f"the statistics index {index} was not a set: rebuilt from the statistics keys")
                members = self._rebuild_index()
            pairs: list[tuple[str, str]] = []
            for raw in sorted(members):
                pair = _member(raw)
                if pair is None:
                    found.append(f"removed {raw!r:.80} from the statistics index {index}: not namespace:function")
                    self._repair(lambda raw=raw: self.client.srem(index, raw))
                elif namespace is None or pair[0] == namespace:
                    pairs.append(pair)
            pipe = self.client.pipeline(transaction=False)
            for ns, fn in pairs:
                pipe.hgetall(self._stats_key(ns, fn))
            rows = pipe.execute(raise_on_error=False)
            out: dict[str, dict[str, dict[str, float]]] = {}
            for (ns, fn), raw_row in zip(pairs, rows, strict=True):
                stats = zero_stats()
                name = self._stats_key(ns, fn)
                if isinstance(raw_row, Exception):
                    if not str(raw_row).startswith("WRONGTYPE"):
                        raise raw_row
                    self._repair(lambda name=name: self._drop_wrong_type(keys=[name], args=["hash"]))
                    found.append(f"the statistics of {ns}:{fn} were not a hash: reset to 0")
                else:
                    for field in STAT_FIELDS:
                        value = raw_row.get(field.encode())
                        if value is None:
                            continue
                        parsed = parse_stat(field, value)
                        if parsed is None:
                            found.append(f"statistics field {field!r} of {ns}:{fn} held {value!r:.60}, "
                                         "not a counter: reset to 0")
                            self._repair(lambda name=name, field=field, value=value: self._reset_field(
                                keys=[name], args=[field, value]))
                        else:
                            stats[field] = float(parsed) if field in FLOAT_STATS else int(parsed)
                out.setdefault(ns, {})[fn] = stats
        for line in found:
            log.warning("effopt cache: %s", line)
        if problems is not None:
            problems.extend(found)
        return out

    def _repair(self, action: Any) -> None:
        """Run a repair of corrupted statistics; a refusal (out of memory) leaves it for the next reader."""
        try:
            action()
        except redis.ResponseError as exc:
            log.warning("effopt cache: could not repair the statistics now (%s); read as 0", exc)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()


def _member(raw: bytes) -> tuple[str, str] | None:
    """``(namespace, function)`` of a statistics index member, ``None`` when it is not one effopt writes."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    ns, sep, fn = text.partition(":")
    if not sep:
        return None
    try:
        validate_name(ns, "namespace")
        validate_name(fn, "function")
    except ValueError:
        return None
    return ns, fn
