"""ComputationCache: compute each (function, version, inputs) once, across processes and workers.

One call runs this flow (the same code drives sync and async functions)::

    key = namespace : module.qualname : version : xxh3-128(canonical inputs)
    read entry -> verified hit: return it
    take the single-flight lock of key -> held by another worker: wait, polling
        the entry (hit when it appears) and the lock (take it over when the
        holder released it or crashed); give up after lock_timeout_s
    read again (another worker may have just finished), compute, store, release

Backend failures are of two kinds (see :mod:`effopt.cache.base`):

* an **outage** (connection refused or reset, timeout): the call computes
  without the cache (fail-open), one warning per outage, ``errors`` counted;
  later calls skip the backend at once while a probe thread asks it every
  ``retry_after_s`` whether it answers again, and caching resumes when it
  does.  Once a call met an outage it makes no further backend request, so
  a hung server costs a call at most one backend timeout;
* a **refusal** (out of memory, a key of the wrong type, a read-only
  replica): only that operation is skipped -- an entry that cannot be
  written is returned uncached, a corrupted entry is rejected, deleted and
  recomputed -- and the next call uses the backend as usual.

Statistics are counted in the process and added to the backend's shared
counters after every miss, at most ``stats_flush_s`` after a hit, by
:meth:`ComputationCache.flush_stats`, and at interpreter exit.  Each flush is
a batch with an id: one that failed is retried with the same id, and the
backend adds a batch once, so counts are neither lost nor doubled when a reply
is lost.  Counts of calls made while the backend was down are added once it
answers again.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import inspect
import logging
import math
import os
import threading
import time
import types
import uuid
import weakref
from collections.abc import Callable, Collection, Coroutine, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from effopt.cache.base import (
    BackendError,
    BackendLock,
    BackendRefused,
    CacheBackend,
    CacheKey,
    CorruptEntry,
    validate_name,
)
from effopt.cache.codec import EntryTooLarge, RejectedEntry, open_entry, seal_entry
from effopt.cache.hashing import UnhashableInput, _Encoder, code_version, function_name, too_deep
from effopt.config import Settings

__all__ = [
    "REFERENCE_MARKER",
    "CacheReferenceError",
    "CallResult",
    "ComputationCache",
    "FunctionSpec",
    "LockHeld",
    "Lookup",
    "SingleFlightTimeout",
    "is_cache_reference",
]

log = logging.getLogger("effopt.cache")

#: Key marking a dict as a cache reference (see :meth:`ComputationCache.reference`).
REFERENCE_MARKER = "__effopt_cache_ref__"

_POLL_FIRST_S = 0.005
_POLL_MAX_S = 0.1
_UNSET: Any = object()


class SingleFlightTimeout(TimeoutError):
    """Waited ``lock_timeout_s`` for another worker computing the same key."""


class LockHeld(Exception):  # noqa: N818 - a state, not an error
    """Raised by ``call(..., wait=False)``: another worker is computing ``key`` right now.

    The caller may wait elsewhere (an Airflow trigger polls the entry and the
    lock) and call again; nothing was counted for this call.
    """

    def __init__(self, key: CacheKey, function: str) -> None:
        super().__init__(f"another worker is computing {function} (key {key})")
        self.key = key
        self.function = function


#: A statistics batch that could not be added for this long is dropped (and the loss logged): the
#: backend remembers batch ids for a day, so a later retry might count it twice.
BATCH_GIVE_UP_S = 12 * 3600


class CacheReferenceError(LookupError):
    """A cache reference cannot be resolved (entry gone, rejected, or backend unreachable)."""


@dataclass(frozen=True)
class FunctionSpec:
    """How a function is cached: its key parts and defaults (built by :meth:`ComputationCache.function_spec`)."""

    func: Callable[..., Any]
    name: str
    version: str
    signature: inspect.Signature
    ignore: frozenset[str]
    ttl: float | None
    tags: tuple[str, ...]
    is_async: bool
    #: ``((name, default), ...)`` when every parameter is positional-or-keyword (fast binding), else ``None``.
    simple_params: tuple[tuple[str, Any], ...] | None = None


@dataclass(slots=True)
class Lookup:
    """Outcome of reading one key."""

    hit: bool
    value: Any = None
    nbytes: int = 0
    compute_s: float = 0.0
    rejected: bool = False
    error: str | None = None


@dataclass(slots=True)
class CallResult:
    """Outcome of one cached call.

    ``hit``: the value came from the cache (the body did not run here).
    ``saved_s``: computation time the hit avoided (the time the entry took to
    compute, less the time spent waiting for another worker to compute it).
    ``nbytes``: size of the entry read or written (0 when nothing was).
    ``error``: why the cache was bypassed (backend failure), else ``None``.
    """

    value: Any
    key: CacheKey
    hit: bool
    stored: bool
    nbytes: int
    compute_s: float
    saved_s: float
    waited_s: float
    rejected: int
    error: str | None


class _Sleep(NamedTuple):
    seconds: float


class _Io(NamedTuple):
    fn: Callable[..., Any]
    args: tuple[Any, ...]


class _Compute:
    """Effect: run the cached function."""


_COMPUTE = _Compute()
_Flow = Generator[Any, Any, CallResult]


def _drive_sync(flow: _Flow, func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> CallResult:
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(send)
        except StopIteration as stop:
            return stop.value
        send, error = None, None
        try:
            if effect is _COMPUTE:
                send = func(*args, **kwargs)
            elif isinstance(effect, _Sleep):
                time.sleep(effect.seconds)
            else:
                send = effect.fn(*effect.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the flow, which re-raises what it does not handle
            error = exc


async def _drive_async(
    flow: _Flow, func: Callable[..., Coroutine[Any, Any, Any]], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> CallResult:
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(send)
        except StopIteration as stop:
            return stop.value
        send, error = None, None
        try:
            if effect is _COMPUTE:
                send = await func(*args, **kwargs)
            elif isinstance(effect, _Sleep):
                await asyncio.sleep(effect.seconds)
            else:  # backend I/O would block the event loop
                send = await asyncio.to_thread(effect.fn, *effect.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the flow, which re-raises what it does not handle
            error = exc


class _LeaseKeeper:
    """Renews a single-flight lock's lease from a thread while its holder computes."""

    def __init__(self, lock: BackendLock, lease_s: float, key: CacheKey) -> None:
        self._lock = lock
        self._interval = lease_s / 3
        self._key = key
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="effopt-cache-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                kept = self._lock.extend()
            except BackendError as exc:
                log.warning("effopt cache: could not renew the lock of %s: %s", self._key, exc)
                continue
            if not kept and not self._stop.is_set():
                log.warning(
                    "effopt cache: lost the single-flight lock of %s (its lease expired); "
                    "another worker may compute the same value",
                    self._key,
                )
                return

    def stop(self) -> None:
        # Not joined: a renewal blocked by a hung backend must not hold up the call.  A renewal that
        # lands after the release finds another token (or none) and changes nothing.
        self._stop.set()


def _bind(spec: FunctionSpec, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments by parameter name, in signature order, defaults applied (``Signature.bind`` semantics)."""
    params = spec.simple_params
    if params is not None and len(args) <= len(params):
        # Fast path for plain signatures; anything unusual falls through to Signature.bind.
        out: dict[str, Any] = {}
        from_kwargs = 0
        for i, (name, default) in enumerate(params):
            if i < len(args):
                out[name] = args[i]
            elif name in kwargs:
                out[name] = kwargs[name]
                from_kwargs += 1
            elif default is not inspect.Parameter.empty:
                out[name] = default
            else:
                break
        else:
            if from_kwargs == len(kwargs):
                return out
    try:
        bound = spec.signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{spec.name}(): {exc}") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def is_cache_reference(value: Any) -> bool:
    """Whether ``value`` is a reference made by :meth:`ComputationCache.reference`."""
    return isinstance(value, dict) and value.get(REFERENCE_MARKER) == 1 and isinstance(value.get("key"), str)


def _positive(value: Any, what: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise TypeError(f"{what} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def _names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        raise TypeError(f"{what} must be a collection of strings such as ({value!r},), got {value!r}")
    return tuple(value)


_LIVE: weakref.WeakSet[ComputationCache] = weakref.WeakSet()


def _secret_bytes(secret: bytes | str, what: str) -> bytes:
    """``secret`` as bytes (a ``str`` is UTF-8 encoded), at least 16 of them; errors never show the value."""
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, (bytes, bytearray)):
        raise TypeError(f"{what} must be bytes or str, got {type(secret).__name__}")
    if len(secret) < 16:
        raise ValueError(f"{what} must be at least 16 bytes long, got {len(secret)} bytes")
    return bytes(secret)


class ComputationCache:
    """Results of functions, stored signed in ``backend`` under ``namespace``.

    ``secret`` (at least 16 bytes; a ``str`` is UTF-8 encoded) signs every
    entry with HMAC-SHA256; every worker sharing entries needs the same one.
    ``fallback_secrets`` are secrets rotated out: entries they signed are
    still read (never written), so a rotation does not turn every entry into
    a miss at once; the first read through each fallback logs a warning
    (once per cache and fallback).

    ``max_entry_bytes``: larger results are returned but not stored (one
    warning per function).  ``compress_min_bytes``: bodies at least this large
    are zstandard-compressed when a sample shows they compress.
    ``lock_lease_s``: how long a crashed worker's lock blocks the others
    (renewed every third of it while computing).  ``lock_timeout_s``: how long
    a call waits for another worker computing the same key before
    :class:`SingleFlightTimeout`.  ``retry_after_s``: after a backend failure,
    calls skip the backend for this long.  ``stats_flush_s``: hits are added
    to the shared statistics at most this late.

    Statistics are counted in the process and added to the backend after
    each miss, at most ``stats_flush_s`` after a hit, by :meth:`flush_stats`
    and :meth:`close`, and at interpreter exit.  A process that ends with
    ``os._exit`` (a forked worker) skips the exit hook: call
    :meth:`flush_stats` or :meth:`close` before it ends.
    """

    def __init__(
        self,
        backend: CacheBackend,
        secret: bytes | str,
        namespace: str = "default",
        *,
        fallback_secrets: Sequence[bytes | str] = (),
        max_entry_bytes: int = 256 * 2**20,
        compress_min_bytes: int = 2**20,
        compress_level: int = 3,
        lock_lease_s: float = 30.0,
        lock_timeout_s: float = 3600.0,
        retry_after_s: float = 2.0,
        stats_flush_s: float = 1.0,
    ) -> None:
        if not isinstance(backend, CacheBackend):
            raise TypeError(f"backend must be a LocalBackend or RedisBackend, got {type(backend).__name__}")
        self.backend = backend
        self._secret = _secret_bytes(secret, "secret")
        if isinstance(fallback_secrets, (str, bytes, bytearray)):
            raise TypeError("fallback_secrets must be a sequence of secrets, not one secret")
        self._fallbacks = tuple(_secret_bytes(f, f"fallback secret {i + 1}") for i, f in enumerate(fallback_secrets))
        self._fallbacks_seen: set[int] = set()
        self.namespace = validate_name(namespace, "namespace")
        self.max_entry_bytes = int(_positive(max_entry_bytes, "max_entry_bytes"))
        self.compress_min_bytes = int(_positive(compress_min_bytes, "compress_min_bytes", allow_zero=True))
        self.compress_level = int(compress_level)
        self.lock_lease_s = _positive(lock_lease_s, "lock_lease_s")
        self.lock_timeout_s = _positive(lock_timeout_s, "lock_timeout_s", allow_zero=True)
        self.retry_after_s = _positive(retry_after_s, "retry_after_s", allow_zero=True)
        self.stats_flush_s = _positive(stats_flush_s, "stats_flush_s", allow_zero=True)
        self._init_state()
        _LIVE.add(self)

    @classmethod
    def from_settings(cls, settings: Settings, backend: CacheBackend, namespace: str = "default") -> ComputationCache:
        """A cache on ``backend`` configured by the ``[effopt] cache_*`` options."""
        if not settings.cache_secret:
            raise ValueError(
                "[effopt] cache_secret is not set: the computation cache signs its entries with it "
                "(set AIRFLOW__EFFOPT__CACHE_SECRET, the same value on every worker)"
            )
        return cls(
            backend,
            settings.cache_secret,
            namespace,
            fallback_secrets=settings.cache_secret_fallbacks,
            max_entry_bytes=settings.cache_max_entry_bytes,
            compress_min_bytes=settings.cache_compress_min_bytes,
            lock_lease_s=settings.cache_lock_lease_s,
            lock_timeout_s=settings.cache_lock_timeout_s,
        )

    def _init_state(self) -> None:
        self._state = threading.Lock()
        self._pending: dict[tuple[str, str], dict[str, float]] = {}
        self._inflight: _Batch | None = None  # a batch whose flush failed: retried as it is, with its id
        self._flush_lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._failed_at: float | None = None  # monotonic time of the last backend failure of the current outage
        self._probing = False  # a probe thread is asking the backend whether it answers again
        self._probe_stop = threading.Event()
        self._warned: set[str] = set()
        self._warned_at: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"ComputationCache({self.backend!r}, namespace={self.namespace!r})"

    # -- functions and keys ----------------------------------------------------
    def function_spec(
        self,
        func: Callable[..., Any],
        *,
        ttl: float | None = None,
        version: str | int | None = None,
        ignore: Collection[str] = (),
        tags: Collection[str] = (),
        name: str | None = None,
    ) -> FunctionSpec:
        """Validate the caching options of ``func`` (see :meth:`cached`)."""
        if not isinstance(func, types.FunctionType):
            raise TypeError(f"only Python functions can be cached, got {type(func).__name__} {func!r}")
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError(f"{function_name(func)} is a generator function; cache a function returning a value")
        signature = inspect.signature(func)
        ignored = frozenset(_names(ignore, "ignore"))
        unknown = sorted(ignored - set(signature.parameters))
        if unknown:
            raise ValueError(
                f"ignore names {', '.join(map(repr, unknown))}, which {'is' if len(unknown) == 1 else 'are'} not "
                f"a parameter of {function_name(func)}{signature}"
            )
        tag_names = tuple(validate_name(t, "each tag") for t in _names(tags, "tags"))
        if ttl is not None:
            ttl = _positive(ttl, "ttl")
        qualified = validate_name(name if name is not None else function_name(func), "name")
        if version is not None:
            ver = "v" + validate_name(str(version), "version")
        else:
            ver = "c" + code_version(func, skip_defaults=tuple(ignored))
        params = signature.parameters.values()
        simple = all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
        return FunctionSpec(
            func=func,
            name=qualified,
            version=ver,
            signature=signature,
            ignore=ignored,
            ttl=ttl,
            tags=tag_names,
            is_async=inspect.iscoroutinefunction(func),
            simple_params=tuple((p.name, p.default) for p in params) if simple else None,
        )

    def _spec(self, func: Callable[..., Any] | FunctionSpec) -> FunctionSpec:
        if isinstance(func, FunctionSpec):
            return func
        spec = getattr(func, "__effopt_cache_spec__", None)
        return spec if isinstance(spec, FunctionSpec) else self.function_spec(func)

    def key(
        self, func: Callable[..., Any] | FunctionSpec, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> CacheKey:
        """The key of calling ``func(*args, **kwargs)``.

        Arguments are bound to the signature first, so ``f(1, b=2)``,
        ``f(1, 2)`` and ``f(1)`` (when ``b`` defaults to 2) share a key.  An
        argument that cannot be hashed deterministically raises
        :class:`~effopt.cache.hashing.UnhashableInput` (a ``TypeError``) naming it.
        """
        spec = self._spec(func)
        arguments = _bind(spec, args, kwargs or {})
        enc = _Encoder()
        for arg, value in arguments.items():
            if arg in spec.ignore:
                continue
            enc.feed(arg, "name")
            try:
                try:
                    enc.feed(value, arg)
                except RecursionError:
                    raise too_deep(arg, value) from None
            except UnhashableInput as exc:
                raise UnhashableInput(
                    f"cannot hash argument {arg!r} of {spec.name} deterministically: {exc}; "
                    f"to leave it out of the cache key, pass ignore=({arg!r},)",
                    exc.path,
                    exc.type_name,
                ) from None
        return CacheKey(self.namespace, spec.name, spec.version, enc.digest().hex())

    # -- decorator -------------------------------------------------------------
    def cached(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        ttl: float | None = None,
        version: str | int | None = None,
        ignore: Collection[str] = (),
        tags: Collection[str] = (),
        name: str | None = None,
    ) -> Any:
        """Decorate a sync or async function so each distinct call computes once.

        ``ttl``: seconds an entry lives (``None`` = until invalidated or evicted).
        ``version``: the function's version in its keys; by default a hash of
        its code (:func:`~effopt.cache.hashing.code_version`), which does not
        see helper functions it calls, globals it reads or the state of
        objects its closure holds -- give ``version=`` (and bump it) when
        those change.  ``ignore``: parameter names left out of the key (a
        logger, a client).  ``tags``: labels for :meth:`invalidate`.
        ``name``: file entries and statistics under this name instead of
        ``module.qualname``.

        The wrapper keeps the function's signature and adds
        ``.refresh(*args, **kwargs)`` (recompute and overwrite),
        ``.call(args, kwargs, refresh=False, ttl=...)`` (returns a
        :class:`CallResult`), ``.key(*args, **kwargs)`` and ``.invalidate()``.
        numpy arrays returned by a hit are read-only views of the entry.  On a
        method, ``self`` is an argument like any other: give its class an
        ``__effopt_hash__`` or list ``"self"`` in ``ignore``; the helpers are
        not bound (``Cls.method.refresh(obj, x)``).
        """

        def decorate(f: Callable[..., Any]) -> Any:
            spec = self.function_spec(f, ttl=ttl, version=version, ignore=ignore, tags=tags, name=name)
            wrapper: Any
            if spec.is_async:

                @functools.wraps(f)
                async def wrapper(*args: Any, **kwargs: Any) -> Any:
                    return (await self.acall(spec, args, kwargs)).value

                async def refresh(*args: Any, **kwargs: Any) -> Any:
                    return (await self.acall(spec, args, kwargs, refresh=True)).value

                wrapper.call = functools.partial(self.acall, spec)
            else:

                @functools.wraps(f)
                def wrapper(*args: Any, **kwargs: Any) -> Any:
                    return self.call(spec, args, kwargs).value

                def refresh(*args: Any, **kwargs: Any) -> Any:
                    return self.call(spec, args, kwargs, refresh=True).value

                wrapper.call = functools.partial(self.call, spec)
            wrapper.refresh = refresh
            wrapper.key = lambda *args, **kwargs: self.key(spec, args, kwargs)
            wrapper.invalidate = lambda: self.invalidate(function=spec.name)
            wrapper.cache = self
            wrapper.__effopt_cache_spec__ = spec
            return wrapper

        return decorate(func) if func is not None else decorate

    # -- calls -----------------------------------------------------------------
    def call(
        self,
        func: Callable[..., Any] | FunctionSpec,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        refresh: bool = False,
        ttl: float | None = _UNSET,
        wait: bool = True,
    ) -> CallResult:
        """Call a sync ``func`` through the cache; ``refresh=True`` recomputes and overwrites.

        ``ttl`` overrides the function's TTL for the entry this call writes.
        ``wait=False``: when another worker is computing the same key, raise
        :class:`LockHeld` at once instead of waiting for it (nothing is
        counted; call again later).
        """
        spec = self._spec(func)
        if spec.is_async:
            raise TypeError(f"{spec.name} is async: use acall()")
        kwargs = dict(kwargs or {})
        ttl = self._ttl(spec, ttl)
        key = self.key(spec, args, kwargs)
        first: Lookup | None = None
        if not refresh and self._backend_usable():
            # The hit path, without the flow's machinery.
            try:
                first = self._read(key)
            except BackendError as exc:
                first = Lookup(hit=False, error=self._failed(exc))
            if first.hit:
                if self._failed_at is not None:
                    self._recovered()
                result = self._hit(spec, key, first, 0.0, int(first.rejected))
                if time.monotonic() - self._last_flush >= self.stats_flush_s:
                    self.flush_stats()
                return result
        return _drive_sync(self._flow(spec, key, refresh, ttl, first, wait), spec.func, args, kwargs)

    async def acall(
        self,
        func: Callable[..., Any] | FunctionSpec,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        refresh: bool = False,
        ttl: float | None = _UNSET,
        wait: bool = True,
    ) -> CallResult:
        """:meth:`call` for an async function (backend I/O runs in a worker thread)."""
        spec = self._spec(func)
        if not spec.is_async:
            raise TypeError(f"{spec.name} is not async: use call()")
        kwargs = dict(kwargs or {})
        ttl = self._ttl(spec, ttl)
        key = self.key(spec, args, kwargs)
        return await _drive_async(self._flow(spec, key, refresh, ttl, None, wait), spec.func, args, kwargs)

    @staticmethod
    def _ttl(spec: FunctionSpec, ttl: float | None) -> float | None:
        if ttl is _UNSET:
            return spec.ttl
        return None if ttl is None else _positive(ttl, "ttl")

    def _hit(self, spec: FunctionSpec, key: CacheKey, found: Lookup, waited_s: float, rejected: int) -> CallResult:
        saved_s = max(0.0, found.compute_s - waited_s)
        with self._state:
            row = self._pending.setdefault((self.namespace, spec.name), {})
            row["hits"] = row.get("hits", 0) + 1
            row["saved_s"] = row.get("saved_s", 0.0) + saved_s
            if rejected:
                row["rejected"] = row.get("rejected", 0) + rejected
        return CallResult(
            value=found.value,
            key=key,
            hit=True,
            stored=False,
            nbytes=found.nbytes,
            compute_s=0.0,
            saved_s=saved_s,
            waited_s=waited_s,
            rejected=rejected,
            error=None,
        )

    def _flow(
        self, spec: FunctionSpec, key: CacheKey, refresh: bool, ttl: float | None, first: Lookup | None, wait: bool
    ) -> _Flow:
        """One call after the first read (``first``, when the caller already made it)."""
        error: str | None = first.error if first is not None else None
        outage = False  # met an outage: no further backend request in this call
        found: Lookup | None = None
        lock: BackendLock | None = None
        rejected = int(first.rejected) if first is not None else 0
        waited_s = 0.0
        if error is None and not self._backend_usable():
            error = "cache bypassed after a recent backend failure"
        if error is None:
            try:
                found, lock, more_rejected, waited_s = yield from self._acquire(key, spec, refresh, first, wait)
                rejected += more_rejected
            except BackendError as exc:
                error, outage = self._failed(exc), not isinstance(exc, BackendRefused)
        if found is not None and found.hit:
            self._recovered()
            result = self._hit(spec, key, found, waited_s, rejected)
            if time.monotonic() - self._last_flush >= self.stats_flush_s:
                yield _Io(self.flush_stats, ())
            return result

        nbytes = 0
        keeper = _LeaseKeeper(lock, self.lock_lease_s, key) if lock is not None and lock.needs_extension else None
        try:
            t0 = time.perf_counter()
            value = yield _COMPUTE
            compute_s = time.perf_counter() - t0
            if error is None:
                try:
                    nbytes = yield _Io(self._store, (key, spec.name, value, compute_s, ttl, spec.tags))
                except BackendError as exc:
                    error, outage = self._failed(exc), not isinstance(exc, BackendRefused)
        finally:
            if keeper is not None:
                keeper.stop()
            if lock is not None:
                error = self._release(lock, outage) or error
        self._count(
            spec.name, misses=1, compute_s=compute_s, bytes=nbytes, rejected=rejected, errors=int(error is not None)
        )
        if error is None:
            self._recovered()
            yield _Io(self.flush_stats, ())
        return CallResult(
            value=value,
            key=key,
            hit=False,
            stored=nbytes > 0,
            nbytes=nbytes,
            compute_s=compute_s,
            saved_s=0.0,
            waited_s=waited_s,
            rejected=rejected,
            error=error,
        )

    def _release(self, lock: BackendLock, outage: bool = False) -> str | None:
        if outage or not self._backend_usable():
            lock.abandon()  # its lease expires; this process takes it back at its next attempt on the key
            return None
        try:
            lock.release()
        except BackendError as exc:
            return self._failed(exc)
        return None

    def _acquire(
        self, key: CacheKey, spec: FunctionSpec, refresh: bool, first: Lookup | None, wait: bool = True
    ) -> Generator[Any, Any, tuple[Lookup | None, BackendLock | None, int, float]]:
        """Read the entry (unless ``first`` is that read), else take the lock, waiting while another worker holds it.

        Returns ``(hit or None, lock or None, entries rejected, seconds waited)``;
        raises BackendError, and :class:`LockHeld` when the lock is held and not ``wait``.
        """
        rejected = 0
        if not refresh and first is None:
            found = yield _Io(self._read, (key,))
            rejected += found.rejected
            if found.hit:
                return found, None, rejected, 0.0
        wait_started: float | None = None
        delay = _POLL_FIRST_S
        while True:
            lock = yield _Io(self.backend.try_lock, (key, self.lock_lease_s))
            if lock is not None:
                break
            if wait_started is None:
                wait_started = time.monotonic()
                if wait:  # (not waiting: the caller says what it does instead, e.g. defer)
                    log.info("effopt cache: another worker holds the single-flight lock of %s; waiting for its "
                             "result (up to %g s; a crashed holder's lock is taken over after its %g s lease)",
                             key, self.lock_timeout_s, self.lock_lease_s)
            if not refresh:
                found = yield _Io(self._read, (key,))
                rejected += found.rejected
                if found.hit:
                    return found, None, rejected, time.monotonic() - wait_started
            if not wait:
                if rejected:
                    self._count(spec.name, rejected=rejected)
                raise LockHeld(key, spec.name)
            if time.monotonic() - wait_started >= self.lock_timeout_s:
                raise SingleFlightTimeout(
                    f"effopt cache: waited {self.lock_timeout_s:g} s for another worker computing {spec.name} "
                    f"(key {key}) without a result; raise lock_timeout_s ([effopt] cache_lock_timeout_s) "
                    "if the computation takes longer"
                )
            yield _Sleep(delay)
            delay = min(delay * 1.5, _POLL_MAX_S)
        waited_s = 0.0 if wait_started is None else time.monotonic() - wait_started
        if not refresh:
            # The previous holder may have stored the value between our read and our lock.
            try:
                found = yield _Io(self._read, (key,))
            except BaseException:
                self._release(lock)
                raise
            rejected += found.rejected
            if found.hit:
                self._release(lock)
                return found, None, rejected, waited_s
        return None, lock, rejected, waited_s

    # -- entries ---------------------------------------------------------------
    def _read(self, key: CacheKey) -> Lookup:
        try:
            blob = self.backend.get(key)
        except CorruptEntry as exc:
            log.warning("effopt cache: rejected the entry of %s: %s; it is deleted and recomputed", key, exc)
            self._delete_rejected(key)
            return Lookup(hit=False, rejected=True)
        if blob is None:
            return Lookup(hit=False)
        try:
            opened = open_entry(blob, key=str(key), secret=self._secret, fallbacks=self._fallbacks)
        except RejectedEntry as exc:
            log.warning("effopt cache: rejected the entry of %s: %s; it is deleted and recomputed", key, exc.reason)
        except Exception as exc:  # noqa: BLE001 - an authentic entry whose value no longer loads (code changed)
            log.warning("effopt cache: the entry of %s could not be loaded (%s: %s); recomputing", key,
                        type(exc).__name__, exc)
        else:
            self._note_fallback(opened.signed_with)
            return Lookup(hit=True, value=opened.value, nbytes=opened.nbytes, compute_s=opened.compute_s)
        self._delete_rejected(key)
        return Lookup(hit=False, rejected=True)

    def _delete_rejected(self, key: CacheKey) -> None:
        """Delete a rejected entry; a refusal leaves it for the next write to replace (an outage is raised)."""
        try:
            self.backend.delete(key)
        except BackendRefused as exc:
            self._failed(exc)

    def _store(
        self, key: CacheKey, function: str, value: Any, compute_s: float, ttl: float | None, tags: Sequence[str]
    ) -> int:
        try:
            sealed = seal_entry(
                value,
                key=str(key),
                secret=self._secret,
                compute_s=compute_s,
                compress_min_bytes=self.compress_min_bytes,
                compress_level=self.compress_level,
                max_bytes=self.max_entry_bytes,
            )
        except EntryTooLarge as exc:
            self._warn_once(
                f"oversize:{function}",
                "effopt cache: the result of %s is %d bytes, over max_entry_bytes=%d: returned but not cached",
                function,
                exc.nbytes,
                exc.limit,
            )
            return 0
        except Exception as exc:  # noqa: BLE001 - unpicklable result: return it uncached rather than fail the call
            self._warn_once(
                f"pickle:{function}",
                "effopt cache: the result of %s cannot be serialised (%s: %s): returned but not cached",
                function,
                type(exc).__name__,
                exc,
            )
            return 0
        self.backend.put(key, sealed.segments, sealed.nbytes, ttl_s=ttl, tags=tags)
        return sealed.nbytes

    def get(self, key: CacheKey) -> Lookup:
        """Read and verify ``key`` (no statistics; a backend failure is reported in ``Lookup.error``)."""
        try:
            return self._read(key)
        except BackendError as exc:
            return Lookup(hit=False, error=self._failed(exc))

    def put(
        self, key: CacheKey, value: Any, *, ttl: float | None = None, tags: Collection[str] = (), compute_s: float = 0.0
    ) -> int:
        """Sign and store ``value`` under ``key``; return the entry size, 0 when not stored (oversized,
        unpicklable, or the backend failed: logged)."""
        if ttl is not None:
            ttl = _positive(ttl, "ttl")
        tag_names = tuple(validate_name(t, "each tag") for t in _names(tags, "tags"))
        try:
            return self._store(key, key.function, value, compute_s, ttl, tag_names)
        except BackendError as exc:
            self._failed(exc)
            return 0

    # -- references ------------------------------------------------------------
    def reference(self, key: CacheKey, nbytes: int = 0) -> dict[str, Any]:
        """A small JSON-serialisable stand-in for the entry of ``key`` (pass it instead of a large value)."""
        return {
            REFERENCE_MARKER: 1,
            "key": str(key),
            "backend": self.backend.kind,
            "location": self.backend.describe(),
            "nbytes": int(nbytes),
        }

    def resolve(self, ref: Mapping[str, Any]) -> Any:
        """The value a :meth:`reference` points to; :class:`CacheReferenceError` if it is gone or invalid."""
        if not is_cache_reference(ref):
            raise TypeError(f"resolve() needs a cache reference made by ComputationCache.reference(), got {ref!r:.200}")
        if ref.get("backend") != self.backend.kind:
            raise CacheReferenceError(
                f"the reference points into a {ref.get('backend')} cache at {ref.get('location')}, "
                f"but this cache uses the {self.backend.kind} backend at {self.backend.describe()}"
            )
        key = CacheKey.parse(ref["key"])
        try:
            blob = self.backend.get(key)
        except CorruptEntry as exc:
            self._count(key.function, rejected=1)
            try:
                self._delete_rejected(key)
            except BackendError:
                pass  # the reference cannot be resolved either way
            raise CacheReferenceError(f"the cache entry {key} was rejected: {exc}") from exc
        except BackendError as exc:
            raise CacheReferenceError(f"cannot resolve the cache reference {key}: {exc}") from exc
        if blob is None:
            raise CacheReferenceError(
                f"the cache entry {key} (at {ref.get('location')}) no longer exists: it expired, was evicted or "
                "invalidated; rerun the task that produced it"
            )
        try:
            opened = open_entry(blob, key=str(key), secret=self._secret, fallbacks=self._fallbacks)
        except RejectedEntry as exc:
            self._count(key.function, rejected=1)
            raise CacheReferenceError(f"the cache entry {key} was rejected: {exc.reason}") from exc
        self._note_fallback(opened.signed_with)
        return opened.value

    def _note_fallback(self, signed_with: int) -> None:
        """Warn once per cache and fallback secret that entries it signed are still being read."""
        if signed_with < 0 or signed_with in self._fallbacks_seen:
            return
        self._fallbacks_seen.add(signed_with)
        log.warning(
            "effopt cache: read an entry signed with fallback secret %d of %d (a secret rotated out); keep it in "
            "[effopt] cache_secret_fallbacks until the entries it signed have expired, or run `python -m effopt "
            "cache invalidate --namespace %s` and remove it", signed_with + 1, len(self._fallbacks), self.namespace)

    # -- statistics ------------------------------------------------------------
    def _count(self, function: str, **fields: float) -> None:
        with self._state:
            row = self._pending.setdefault((self.namespace, function), {})
            for name, value in fields.items():
                if value:
                    row[name] = row.get(name, 0) + value

    def flush_stats(self, *, force: bool = False) -> bool:
        """Add this process's pending counts to the backend; ``False`` (kept for a retry) when that failed.

        Counts go as a batch with an id; a batch that failed is retried as it
        is, with its id, and the backend adds each batch once, so a flush whose
        reply was lost is not counted twice.  During an outage (and while
        another thread is flushing) nothing is sent unless ``force``.
        """
        if not force and not self._backend_usable():
            return False
        if not self._flush_lock.acquire(blocking=force):
            return False  # another thread is flushing: these counts go with the next flush
        try:
            with self._state:
                self._last_flush = time.monotonic()
            for _ in range(2):  # the failed batch first, then what was counted since
                with self._state:
                    batch = self._inflight
                    if batch is None:
                        if not self._pending:
                            return True
                        batch = self._inflight = _Batch(uuid.uuid4().hex, self._pending, time.time())
                        self._pending = {}
                if time.time() - batch.created > BATCH_GIVE_UP_S:
                    log.warning(
                        "effopt cache: dropped statistics the backend did not take for %.0f hours (%s); the shared "
                        "counters miss them", (time.time() - batch.created) / 3600, _describe_counts(batch.delta))
                    with self._state:
                        self._inflight = None
                    continue
                try:
                    self.backend.add_stats(batch.delta, batch.id)
                except BackendError as exc:
                    self._failed(exc)
                    return False
                with self._state:
                    self._inflight = None
            return not self._pending
        finally:
            self._flush_lock.release()

    def pending_stats(self) -> dict[tuple[str, str], dict[str, float]]:
        """Counts made in this process and not yet added to the backend (a failed batch included)."""
        with self._state:
            out: dict[tuple[str, str], dict[str, float]] = {}
            for delta in ((self._inflight.delta if self._inflight else {}), self._pending):
                for k, fields in delta.items():
                    row = out.setdefault(k, {})
                    for name, value in fields.items():
                        row[name] = row.get(name, 0) + value
            return out

    def stats(self, namespace: str | None = None) -> dict[str, dict[str, float]]:
        """``{function: {"hits", "misses", "rejected", "errors", "compute_s", "saved_s", "bytes"}}``.

        Shared by every process using the backend, for this cache's namespace
        (or ``namespace``).  ``bytes`` is the total size of the entries written;
        ``saved_s`` the computation time hits avoided.  Raises
        :class:`~effopt.cache.base.BackendError` when the backend is unreachable.
        """
        self.flush_stats(force=True)
        ns = self.namespace if namespace is None else validate_name(namespace, "namespace")
        return self.backend.read_stats(ns).get(ns, {})

    # -- invalidation ----------------------------------------------------------
    def invalidate(
        self, function: Callable[..., Any] | str | None = None, namespace: str | None = None, tag: str | None = None
    ) -> int:
        """Delete entries: of ``function`` (every version), of a whole ``namespace``, or carrying ``tag``.

        Filters combine; ``function`` and ``tag`` apply to this cache's
        namespace unless ``namespace`` is given.  Returns the number of entries
        deleted.  Raises :class:`~effopt.cache.base.BackendError` when the
        backend is unreachable.
        """
        if function is None and namespace is None and tag is None:
            raise ValueError("invalidate() needs function=, namespace= or tag=")
        name: str | None
        if function is None or isinstance(function, str):
            name = function
        else:
            spec = getattr(function, "__effopt_cache_spec__", None)
            name = spec.name if isinstance(spec, FunctionSpec) else function_name(function)
        if name is not None:
            validate_name(name, "function")
        if tag is not None:
            validate_name(tag, "tag")
        ns = self.namespace if namespace is None else validate_name(namespace, "namespace")
        return self.backend.invalidate(namespace=ns, function=name, tag=tag)

    # -- fail-open bookkeeping ---------------------------------------------------
    def _backend_usable(self) -> bool:
        with self._state:
            if self._failed_at is None:
                return True
            # While a probe runs, it alone decides when the backend answers again.
            return not self._probing and time.monotonic() - self._failed_at >= self.retry_after_s

    def _failed(self, exc: BaseException) -> str:
        if isinstance(exc, BackendRefused):
            self._warn_every(
                f"refused:{exc.kind}",
                "effopt cache: %s; this call goes on without that operation (not an outage: the cache stays in use)",
                exc,
            )
            return str(exc)
        with self._state:
            first = self._failed_at is None
            self._failed_at = time.monotonic()
            start_probe = not self._probing and self.retry_after_s > 0
            if start_probe:
                self._probing = True
        if first:
            log.warning(
                "effopt cache: %s; calls compute without the cache until the backend answers again", exc
            )
        if start_probe:
            threading.Thread(
                target=_probe, args=(weakref.ref(self), self.retry_after_s, self._probe_stop),
                name="effopt-cache-probe", daemon=True,
            ).start()
        return str(exc)

    def _recovered(self) -> None:
        with self._state:
            if self._failed_at is None:
                return
            self._failed_at = None
        log.info("effopt cache: backend %s answers again; caching resumed", self.backend.describe())

    def _warn_every(self, what: str, message: str, *args: Any) -> None:
        """Warn about ``what`` at most once a minute."""
        now = time.monotonic()
        with self._state:
            last = self._warned_at.get(what)
            if last is not None and now - last < _WARN_EVERY_S:
                return
            self._warned_at[what] = now
        log.warning(message, *args)

    def _warn_once(self, what: str, message: str, *args: Any) -> None:
        with self._state:
            if what in self._warned:
                return
            self._warned.add(what)
        log.warning(message, *args)

    def close(self) -> None:
        """Flush pending statistics and release the backend's connections."""
        self._probe_stop.set()
        self.flush_stats()
        self.backend.close()
        _LIVE.discard(self)


@dataclass(frozen=True)
class _Batch:
    id: str
    delta: dict[tuple[str, str], dict[str, float]]
    created: float


_WARN_EVERY_S = 60.0


def _describe_counts(delta: Mapping[tuple[str, str], Mapping[str, float]]) -> str:
    totals: dict[str, float] = {}
    for fields in delta.values():
        for name, value in fields.items():
            totals[name] = totals.get(name, 0) + value
    return ", ".join(f"{name} {value:g}" for name, value in sorted(totals.items())) or "nothing"


def _probe(ref: weakref.ReferenceType[ComputationCache], interval: float, stop: threading.Event) -> None:
    """Ask the backend every ``interval`` whether it answers; end the outage of the cache when it does."""
    answered = False
    try:
        while not stop.wait(interval):
            cache = ref()
            if cache is None:
                return
            try:
                cache.backend.ping()
            except BackendRefused:
                pass  # an error reply is an answer
            except Exception:  # noqa: BLE001 - still down (or hung): ask again later
                del cache
                continue
            answered = True
            return
    finally:
        cache = ref()
        if cache is not None:
            with cache._state:
                cache._probing = False
                was_down = answered and cache._failed_at is not None
                if answered:
                    cache._failed_at = None
            if was_down:
                log.info("effopt cache: backend %s answers again; caching resumed", cache.backend.describe())


def _flush_all_at_exit() -> None:
    for cache in list(_LIVE):
        if cache._failed_at is None:  # do not hold up the exit on a backend that just failed
            cache.flush_stats()


def _after_fork_in_child() -> None:
    # Counts made by the parent are the parent's to flush; locks may have been held mid-fork.
    for cache in list(_LIVE):
        cache._init_state()


atexit.register(_flush_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
